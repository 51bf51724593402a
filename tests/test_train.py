"""The real `train_and_evaluate` on TFDS mock data, on 1 and 8 devices."""

import glob
import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from contrastive_jax import checkpointing, train
from tests.test_simclr_step import tiny_config


def mock_cifar_config(num_steps):
  c = tiny_config()
  c.dataset, c.train_split = "cifar10", "train"
  c.image_size = 16
  c.view_augment = ("random_resized_crop(16)|flip_lr|color_jitter(0.5, p=0.8)"
                    "|grayscale(p=0.2)")
  c.batch_size = 16
  c.num_train_steps = num_steps
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  # tfds.testing.mock_data patches the filesystem globally while it builds a
  # dataset (the kNN monitor's passes do): a save finishing in the
  # background then would write through the mock.
  c.async_checkpointing = False
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("num_devices", [1, 8])
def test_train_and_evaluate_on_mock_cifar10(tmp_path, num_devices):
  workdir = str(tmp_path)
  config = mock_cifar_config(num_steps=4)
  with tfds.testing.mock_data(num_examples=64,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    state = train.train_and_evaluate(config, workdir,
                                     devices=jax.devices()[:num_devices])
  assert int(state.step) == 4
  rows = [r for r in read_metrics(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [2, 4]
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert all(r["learning_rate"] > 0 for r in rows)
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=2, keep=3)
  assert ckpt.latest_step() == 4
  assert ckpt.restore_config()["batch_size"] == 16


def test_rerun_resumes_from_the_checkpoint(tmp_path):
  workdir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=64,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    first = train.train_and_evaluate(mock_cifar_config(num_steps=2), workdir,
                                     devices=jax.devices()[:2])
    first_params = jax.device_get(first.params)
    # Same run, longer: it must continue from step 2, not start over.
    second = train.train_and_evaluate(mock_cifar_config(num_steps=4), workdir,
                                      devices=jax.devices()[:2])
    # Finished: a third call changes nothing.
    third = train.train_and_evaluate(mock_cifar_config(num_steps=4), workdir,
                                     devices=jax.devices()[:2])
  assert int(second.step) == 4
  steps = [r["step"] for r in read_metrics(workdir) if "loss" in r]
  assert steps == [2, 4]  # no step logged twice: step 2 was not redone
  for a, b in zip(jax.tree.leaves(jax.device_get(third.params)),
                  jax.tree.leaves(jax.device_get(second.params))):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(first_params), jax.tree.leaves(jax.device_get(
          second.params))))
