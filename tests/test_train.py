"""The real `train_and_evaluate` on a real prepared TFDS dataset (ArrayRecord,
JPEG), on 1 and 8 devices."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing, train
from tests.test_simclr_step import tiny_config


# A real TFDS dataset written by the tests (tests/prepared_data.py): 48
# train, 20 test photos of 18-30 px, 4 classes.
DATASET = "cj_photos_ar_jpeg"


def photos_config(num_steps, data_dir):
  c = tiny_config()
  c.dataset, c.train_split, c.eval_split = DATASET, "train", "test"
  c.data_dir = data_dir
  c.num_classes = -1  # the dataset's 4
  c.eval_augment = "resize(16)"
  c.eval_batch_size = 16
  c.image_size = 16
  c.view_augment = ("random_resized_crop(16)|flip_lr|color_jitter(0.5, p=0.8)"
                    "|grayscale(p=0.2)")
  c.batch_size = 16
  c.num_train_steps = num_steps
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


# One device: tests/test_preview.py's run on the same data.
@pytest.mark.parametrize("num_devices", [8])
def test_train_and_evaluate_on_prepared_photos(tmp_path, prepared_tfds,
                                              num_devices):
  workdir = str(tmp_path)
  config = photos_config(num_steps=4, data_dir=prepared_tfds[0])
  state = train.train_and_evaluate(config, workdir,
                                   devices=jax.devices()[:num_devices])
  assert int(state.step) == 4
  rows = [r for r in read_metrics(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [2, 4]
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert all(r["learning_rate"] > 0 for r in rows)
  # The online probe trained on the dataset's 4 classes, and the kNN monitor
  # read both splits (the path that used to crash on ArrayRecord).
  assert all(np.isfinite(r["probe_loss"]) for r in rows)
  assert state.params["probe"]["linear"]["kernel"].shape[-1] == 4
  knn_rows = [r for r in read_metrics(workdir) if "knn_accuracy" in r]
  assert [r["step"] for r in knn_rows] == [4]
  assert 0.0 <= knn_rows[0]["knn_accuracy"] <= 1.0
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=2, keep=3)
  assert ckpt.latest_step() == 4
  assert ckpt.restore_config()["batch_size"] == 16


def test_rerun_resumes_from_the_checkpoint(tmp_path, prepared_tfds):
  """A rerun continues the checkpoint and ends on the bits of a run that
  was never stopped; with config.augment_on_device, so the host sends
  crops and uniforms and the step augments them (the host-augmented stream
  resumes bit-exactly in tests/test_resume.py)."""
  workdir = str(tmp_path / "resumed")

  def config(steps):
    c = photos_config(steps, prepared_tfds[0])
    c.augment_on_device = True
    return c
  first = train.train_and_evaluate(config(2), workdir,
                                   devices=jax.devices()[:2])
  first_params = jax.device_get(first.params)
  # Same run, longer: it must continue from step 2, not start over.
  second = train.train_and_evaluate(config(4), workdir,
                                    devices=jax.devices()[:2])
  # Finished: a third call changes nothing, not even a new events file.
  events = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  third = train.train_and_evaluate(config(4), workdir,
                                   devices=jax.devices()[:2])
  assert sorted(glob.glob(os.path.join(workdir,
                                       "events.out.tfevents.*"))) == events
  assert int(second.step) == 4
  steps = [r["step"] for r in read_metrics(workdir) if "loss" in r]
  assert steps == [2, 4]  # no step logged twice: step 2 was not redone
  for a, b in zip(jax.tree.leaves(jax.device_get(third.params)),
                  jax.tree.leaves(jax.device_get(second.params))):
    np.testing.assert_array_equal(a, b)
  straight = train.train_and_evaluate(config(4), str(tmp_path / "straight"),
                                      devices=jax.devices()[:2])
  for a, b in zip(jax.tree.leaves(jax.device_get(straight)),
                  jax.tree.leaves(jax.device_get(second))):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(first_params), jax.tree.leaves(jax.device_get(
          second.params))))



def test_sigterm_during_start_up_stops_at_the_first_step_lock_released(
    tmp_path, monkeypatch):
  """A SIGTERM after the lock is taken but before step 1 (here: while the
  run checks its free space) is handled like any other: the run saves
  step 1, returns (exit 0 from main) and releases the lock."""
  import signal  # pylint: disable=g-import-not-at-top
  from contrastive_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  original = checkpointing.Checkpointer.check_free_space

  def sigterm_then_check(self, *args, **kwargs):
    assert os.path.exists(os.path.join(str(tmp_path), workdir_lock.LOCK_FILE))
    os.kill(os.getpid(), signal.SIGTERM)
    return original(self, *args, **kwargs)

  monkeypatch.setattr(checkpointing.Checkpointer, "check_free_space",
                      sigterm_then_check)
  before = signal.getsignal(signal.SIGTERM)
  c = tiny_config()
  c.num_train_steps = 5
  c.async_checkpointing = False
  c.knn.every_steps = 0
  state = train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:1])
  assert int(state.step) == 1
  assert os.path.isdir(os.path.join(str(tmp_path), "checkpoints", "1"))
  assert not os.path.exists(os.path.join(str(tmp_path),
                                         workdir_lock.LOCK_FILE))
  assert signal.getsignal(signal.SIGTERM) is before  # handed back
