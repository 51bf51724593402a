"""Orbax round trip of a sharded train state, bit for bit."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from contrastive_jax import checkpointing, parallel
from contrastive_jax.errors import CheckpointError
from contrastive_jax.train_state import TrainState


def _state(mesh, seed=0):
  rng = np.random.default_rng(seed)
  state = TrainState(
      step=jnp.asarray(7, jnp.int32),
      params={"dense": {"kernel": rng.normal(size=(5, 3)).astype(np.float32),
                        "bias": rng.normal(size=(3,)).astype(np.float32)}},
      batch_stats={"bn": {"mean": rng.normal(size=(3,)).astype(np.float32)}},
      opt_state=(rng.normal(size=(5, 3)).astype(np.float32),),
      rng=jax.random.PRNGKey(seed),
      extra={"queue": rng.normal(size=(16, 4)).astype(np.float32)})
  return jax.device_put(state, parallel.replicated(mesh))


def _config():
  return ml_collections.ConfigDict({"method": "simclr", "batch_size": 8})


def test_round_trip_is_bit_identical(tmp_path):
  mesh = parallel.make_data_mesh()
  state = _state(mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path), save_every_steps=7, keep=2)
  assert ckpt.save(7, state, _config())
  assert not ckpt.save(8, state, _config())  # not a multiple of 7
  ckpt.wait()
  assert ckpt.latest_step() == 7

  zeros = jax.tree.map(jnp.zeros_like, state)
  restored = ckpt.restore(checkpointing.abstract_like(zeros))
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sharding.is_equivalent_to(want.sharding, got.ndim)
  assert ckpt.restore_config()["batch_size"] == 8
  ckpt.close()


def test_keeps_only_the_last_k(tmp_path):
  mesh = parallel.make_data_mesh()
  ckpt = checkpointing.Checkpointer(str(tmp_path), save_every_steps=1, keep=2)
  state = _state(mesh)
  for step in (1, 2, 3):
    ckpt.save(step, state.replace(step=jnp.asarray(step)), _config())
  ckpt.wait()
  assert sorted(ckpt._manager.all_steps()) == [2, 3]
  ckpt.close()


def test_restore_without_checkpoint_is_a_clear_error(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), save_every_steps=1, keep=1)
  with pytest.raises(CheckpointError, match="no checkpoint in"):
    ckpt.restore({})


def test_relative_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  mesh = parallel.make_data_mesh()
  ckpt = checkpointing.Checkpointer("relative/run", save_every_steps=1,
                                    keep=1)
  assert ckpt.save(7, _state(mesh), _config())
  ckpt.wait()
  assert (tmp_path / "relative" / "run" / "checkpoints" / "7").is_dir()
  ckpt.close()
