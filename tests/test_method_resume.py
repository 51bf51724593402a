"""MoCo preempted and resumed in process: the queue, its pointer, the EMA
key encoder, BN statistics and RNG end bit-identical to a run never
interrupted."""

import jax
import numpy as np

from contrastive_jax import preemption, train
from tests.test_moco import tiny_config

NUM_STEPS = 6


def config():
  c = tiny_config(num_train_steps=NUM_STEPS, warmup_epochs=0.0,
                  preview_images=0, online_probe=False,
                  checkpoint_every_steps=100, log_every_steps=1,
                  model="tiny_resnet", width_multiplier=1)
  c.knn.every_steps = 0
  return c


def test_preempted_moco_resumes_bit_identical(tmp_path, monkeypatch):
  devices = jax.devices()[:2]
  whole = jax.device_get(train.train_and_evaluate(
      config(), str(tmp_path / "whole"), devices=devices))

  # Preempted after step 3 (the queue of 96 keys has wrapped around once).
  with monkeypatch.context() as m:
    m.setattr(preemption.Preemption, "reached",
              lambda self, step: step == 3)
    stopped = train.train_and_evaluate(config(), str(tmp_path / "split"),
                                       devices=devices)
  assert int(stopped.step) == 3
  resumed = jax.device_get(train.train_and_evaluate(
      config(), str(tmp_path / "split"), devices=devices))
  assert int(resumed.step) == NUM_STEPS
  assert set(whole.extra)  # the queue and its pointer are in `extra`
  paths = jax.tree_util.tree_flatten_with_path(whole)[0]
  for (path, want), got in zip(paths, jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want),
                                  err_msg=jax.tree_util.keystr(path))
