"""MoCo through the real `train_and_evaluate` on a real prepared TFDS dataset:
1 and 8 devices, the queue in the checkpoint, resuming."""

import glob
import os

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing, ema, train
from contrastive_jax.errors import ConfigError
from tests.test_moco import tiny_config
from tests.test_train import DATASET, read_metrics


def photos_config(num_steps, **overrides):
  c = tiny_config(dataset=DATASET, train_split="train", image_size=16,
                  num_classes=-1,
                  batch_size=16, queue_size=48, num_train_steps=num_steps,
                  log_every_steps=2, checkpoint_every_steps=2)
  c.view_augment = ("random_resized_crop(16, area=(0.2, 1.0))|flip_lr"
                    "|color_jitter(0.5, p=0.8)|grayscale(p=0.2)")
  c.knn.every_steps = 0  # the kNN monitor has tests of its own
  c.update(overrides)
  return c


def _train(config, workdir, num_devices, data_dir):
  config.data_dir = data_dir
  return train.train_and_evaluate(config, workdir,
                                  devices=jax.devices()[:num_devices])


def test_symmetric_run_on_8_devices(tmp_path, prepared_tfds):
  # Symmetric: both views' keys are enqueued, 32 a step.
  workdir = str(tmp_path)
  state = _train(photos_config(4, bn_groups_per_device=1,
                                   symmetric_loss=True, queue_size=96),
                 workdir, num_devices=8,
                 data_dir=prepared_tfds[0])
  assert int(state.step) == 4
  rows = [r for r in read_metrics(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    assert np.isfinite(r["loss"]) and r["ema_momentum"] == pytest.approx(
        0.99)
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  # The checkpoint holds the queue, its pointer and the key encoder.
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=2, keep=3)
  assert ckpt.latest_step() == 4
  restored = ckpt.restore(checkpointing.abstract_like(state))
  ckpt.close()
  assert int(restored.extra["queue_ptr"]) == 4 * 32 % 96
  for name in ("queue", "key_batch_stats"):
    for a, b in zip(jax.tree.leaves(restored.extra[name]),
                    jax.tree.leaves(state.extra[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(ema.target_params(restored.opt_state)),
                  jax.tree.leaves(ema.target_params(state.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_one_device_run_resumes_with_the_queue(tmp_path, prepared_tfds):
  # One device, two BN groups for shuffle-BN.
  workdir = str(tmp_path)
  first = _train(photos_config(2), workdir, num_devices=1,
                 data_dir=prepared_tfds[0])
  first_queue = np.asarray(jax.device_get(first.extra["queue"]))
  second = _train(photos_config(4), workdir, num_devices=1,
                 data_dir=prepared_tfds[0])
  rows = [r for r in read_metrics(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [2, 4]  # step 2 was not redone
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert int(second.step) == 4
  assert int(ema.ema_state(second.opt_state).count) == 4
  assert int(second.extra["queue_ptr"]) == 4 * 16 % 48
  queue = np.asarray(jax.device_get(second.extra["queue"]))
  # Steps 3 and 4 wrote rows 32..47 and 0..15; rows 16..31 are step 2's.
  np.testing.assert_array_equal(queue[16:32], first_queue[16:32])
  assert not np.array_equal(queue[:16], first_queue[:16])


def test_bad_queue_size_fails_before_the_workdir_is_made(tmp_path, prepared_tfds):
  workdir = str(tmp_path / "new")
  with pytest.raises(ConfigError, match="config.queue_size=40"):
    _train(photos_config(2, queue_size=40), workdir, num_devices=1,
                 data_dir=prepared_tfds[0])
  assert not os.path.exists(workdir)
