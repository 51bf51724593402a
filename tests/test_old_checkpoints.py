"""Checkpoints written before the Method interface was opened (step context,
optimizer hook; commit c0b3fce) restore with today's code into today's
state layout, every leaf as it was saved: `tests/data/checkpoints_v1/`,
written by `tests/data/write_old_checkpoints.py` from that commit.
"""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from contrastive_jax import checkpointing, method_steps, parallel

DATA = os.path.join(os.path.dirname(__file__), "data", "checkpoints_v1")
METHODS = ("byol", "moco", "moco_v3", "simclr", "simsiam")


@pytest.mark.parametrize("method", METHODS)
def test_a_checkpoint_of_the_old_interface_restores(method, tmp_path):
  # A copy: Orbax may write beside what it reads.
  workdir = str(tmp_path / method)
  shutil.copytree(os.path.join(DATA, method), workdir)
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=1,
                                    read_only=True)
  config = ml_collections.ConfigDict(ckpt.restore_config())
  assert config.method == method
  steps = method_steps.build(
      config, parallel.make_data_mesh(jax.devices()[:2]), steps_per_epoch=1,
      total_steps=config.num_train_steps, guard=False)
  state = jax.device_get(ckpt.restore(steps.abstract_state()))
  ckpt.close()
  with open(os.path.join(workdir, "values.json")) as f:
    saved = json.load(f)
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  assert {jax.tree_util.keystr(p) for p, _ in leaves} == set(saved)
  assert int(state.step) == 2
  for path, leaf in leaves:
    want_sum, want_shape = saved[jax.tree_util.keystr(path)]
    assert list(np.shape(leaf)) == want_shape, path
    np.testing.assert_allclose(
        np.sum(np.square(np.asarray(leaf, np.float64))), want_sum,
        rtol=1e-6, err_msg=jax.tree_util.keystr(path))


# All five were run when the interface changed (all equal, 75 s on 2
# cores); the suite keeps the one whose optimizer has the most parts (EMA
# target, frozen mask, predictor).
@pytest.mark.parametrize("method", ["moco_v3"])
def test_the_same_two_steps_today_reach_the_saved_state(method, tmp_path):
  """The trajectory did not change: today's code, run as the writer ran
  the old one (same config, 2 steps on 2 devices), ends where the old
  code's checkpoint is, leaf by leaf (sums of squares; XLA's optimisation
  level differs between the writer and the tests)."""
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(DATA))
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  import write_old_checkpoints  # pylint: disable=g-import-not-at-top
  config = write_old_checkpoints.CONFIGS[method]()
  config.knn.every_steps = 0
  config.health.every_steps = 0
  state = jax.device_get(train.train_and_evaluate(
      config, str(tmp_path / "run"), devices=jax.devices()[:2]))
  with open(os.path.join(DATA, method, "values.json")) as f:
    saved = json.load(f)
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    np.testing.assert_allclose(
        np.sum(np.square(np.asarray(leaf, np.float64))),
        saved[jax.tree_util.keystr(path)][0], rtol=1e-4, atol=1e-9,
        err_msg=jax.tree_util.keystr(path))


def test_the_ema_target_is_read_at_its_path_in_a_checkpoint(tmp_path):
  """A teacher-evaluating method's encoder (`target_encoder_variables`)
  from a checkpoint read back as nested dicts, as `load_encoder` reads it:
  the BYOL checkpoint's target encoder, every leaf as saved."""
  from contrastive_jax.methods import encoder_with_head  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "byol")
  shutil.copytree(os.path.join(DATA, "byol"), workdir)
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=1,
                                    read_only=True)
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                          ckpt.state_metadata(2))
  state = jax.device_get(ckpt.restore(abstract))
  ckpt.close()
  variables = encoder_with_head.target_encoder_variables(state)
  with open(os.path.join(workdir, "values.json")) as f:
    saved = json.load(f)
  leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  assert leaves
  for path, leaf in leaves:
    key = ".opt_state[1].target['encoder']" + jax.tree_util.keystr(path)
    np.testing.assert_allclose(
        np.sum(np.square(np.asarray(leaf, np.float64))), saved[key][0],
        rtol=1e-6, err_msg=key)
  assert jax.tree.leaves(variables["batch_stats"])
  # The online encoder is another network (BYOL evaluates that one).
  online = encoder_with_head.encoder_variables(state)
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(online["params"]), jax.tree.leaves(variables["params"])))


def test_a_state_laid_out_by_another_version_is_named_as_such(tmp_path):
  # A step whose config matches but whose state tree is not the one this
  # code builds (a method's optimizer state changed between versions) is
  # said to be that, not just Orbax's two trees; nothing is moved aside.
  workdir = str(tmp_path / "run")
  config = ml_collections.ConfigDict({"method": "simclr"})
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=2,
                                    asynchronous=False)
  for step in (1, 2):
    ckpt.save(step, {"params": np.zeros(3, np.float32),
                     "opt_state": {"mu": np.zeros(3, np.float32)}}, config)
    ckpt.wait()
  today = {"params": jax.ShapeDtypeStruct((3,), np.float32),
           "opt_state": {"inner": {"mu": jax.ShapeDtypeStruct(
               (3,), np.float32)}, "count": jax.ShapeDtypeStruct(
                   (), np.int32)}}
  with pytest.raises(checkpointing.CheckpointError) as info:
    ckpt.resume(today, config)
  message = str(info.value)
  assert message.count(checkpointing.STRUCTURE_CHANGED) == 1, message
  assert "(steps 2, 1)" in message and "structures" not in message
  for step in ("1", "2"):
    assert os.path.isdir(os.path.join(workdir, "checkpoints", step))
