"""Shuffle-BN's two permutations (methods/shuffle_bn.py): MoCo's uniform one
('shuffle', the recipes' default; moco builder.py:81-82 @90e244a,
`torch.randperm` of the gathered batch) and the derangement
('shuffle_derange'); on 1, 2 and 8 devices, and a MoCo run resumed from a
host copy of its state bit for bit."""

import jax
import numpy as np
import pytest

from contrastive_jax import parallel
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import moco, shuffle_bn
from tests.test_moco import shuffled_group_tags, tiny_config
from tests.test_simclr_step import build_unguarded

def _draws(mode, num_groups, group_size, count, seed=0):
  keys = jax.random.split(jax.random.key(seed), count)
  draw = jax.vmap(lambda k: shuffle_bn.PERMUTATIONS[mode](
      k, num_groups, group_size))
  return np.asarray(jax.jit(draw)(keys))


def test_moco_key_bn_modes():
  assert moco.KEY_BN_MODES == ("shuffle", "shuffle_derange", "sync")
  assert shuffle_bn.PERMUTATIONS["shuffle"] is shuffle_bn.uniform_permutation
  # Every MoCo recipe shuffles as the reference (defaults.py; moco_v2.py's
  # demo names `_batch_shuffle_single_gpu`, also a randperm).
  for name in ("moco_v1:imagenet", "moco_v2:imagenet", "moco_v2:cifar10_demo",
               "moco_v1:digits", "moco_v2:digits"):
    assert config_lib.load(name).key_bn == "shuffle", name


def test_uniform_permutation_is_one_randperm_of_the_global_batch():
  rng = jax.random.key(3)
  perm = np.asarray(shuffle_bn.uniform_permutation(rng, 8, 4))
  assert perm.dtype == np.int32 and sorted(perm) == list(range(32))
  np.testing.assert_array_equal(perm, jax.random.permutation(rng, 32))
  # The same draw however the 32 split into groups: 8 devices x 1 group
  # and 1 device x 8 groups, or 2 x 16, shuffle identically.
  for groups, size in ((2, 16), (32, 1)):
    np.testing.assert_array_equal(
        shuffle_bn.uniform_permutation(rng, groups, size), perm)
  with pytest.raises(ValueError, match="at least 2 BN groups"):
    shuffle_bn.uniform_permutation(rng, 1, 32)


@pytest.mark.parametrize("num_groups,group_size", [(8, 4), (2, 16)])
def test_uniform_keeps_a_key_in_its_group_with_probability_one_over_g(
    num_groups, group_size):
  count, n = 4000, num_groups * group_size
  perms = _draws("shuffle", num_groups, group_size, count)
  slot_group = np.arange(n) // group_size
  stays = np.mean(perms // group_size == slot_group)
  # 128,000 slots: the standard error of 1/G is under 0.0015.
  assert abs(stays - 1 / num_groups) < 0.005, stays
  # Uniform over positions: every sample lands in every slot about
  # count/n times (Pearson's chi-square, (n-1)^2 degrees of freedom;
  # mean 961 and sd 44 at n=32: a bound of +5 sd).
  counts = np.zeros((n, n))
  np.add.at(counts, (np.broadcast_to(np.arange(n), perms.shape), perms), 1)
  expected = count / n
  chi2 = np.sum((counts - expected) ** 2 / expected)
  dof = (n - 1) ** 2
  assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2
  # The derangement never leaves a key in its group.
  derange = _draws("shuffle_derange", num_groups, group_size, 200)
  assert not np.any(derange // group_size == slot_group)


@pytest.mark.parametrize("mode", sorted(shuffle_bn.PERMUTATIONS))
@pytest.mark.parametrize("num_devices,groups_per_device",
                         [(8, 1), (2, 4), (1, 8)])
def test_each_key_comes_back_normalised_in_its_slots_group(
    mode, num_devices, groups_per_device):
  n_global, num_groups = 32, num_devices * groups_per_device
  group_size = n_global // num_groups
  perm = shuffle_bn.PERMUTATIONS[mode](jax.random.key(5), num_groups,
                                       group_size)
  mine, everyone = shuffled_group_tags(perm, num_devices, groups_per_device)
  np.testing.assert_array_equal(mine[:, 0], np.arange(n_global))
  np.testing.assert_array_equal(everyone[:, 0], np.arange(n_global))
  # Sample i is encoded in slot argsort(perm)[i], in that slot's group.
  key_group = np.argsort(np.asarray(perm)) // group_size
  np.testing.assert_array_equal(everyone[:, 1], key_group)
  same = np.mean(key_group == np.arange(n_global) // group_size)
  if mode == "shuffle_derange":
    assert same == 0
  else:  # This draw leaves some keys in their query's group (1/8 expected).
    assert 0 < same < 0.5, same


def test_shuffle_derange_needs_two_groups_too():
  c = tiny_config(key_bn="shuffle_derange", bn_groups_per_device=1)
  with pytest.raises(ConfigError, match="key_bn='shuffle_derange' needs at "
                     "least 2 BN groups"):
    config_checks.validate(c, num_devices=1, num_processes=1)
  config_checks.validate(c, num_devices=2, num_processes=1)


def _batches(num, batch_size=32, image_size=8):
  rng = np.random.default_rng(7)
  shape = (batch_size, image_size, image_size, 3)
  for _ in range(num):
    base = rng.uniform(size=shape).astype(np.float32)
    yield {"view1": base,
           "view2": np.clip(base + rng.normal(scale=0.05, size=shape), 0, 1
                            ).astype(np.float32),
           "label": np.zeros((batch_size,), np.int32)}


def _steps(step, mesh, state, batches):
  """The steps on `batches` from a host copy of a state, placed as a
  restored checkpoint is (replicated); the final state on the host."""
  with jax.set_mesh(mesh):
    state = jax.device_put(state, parallel.replicated(mesh))
    for batch in batches:
      state, _ = step(state, parallel.global_batch(batch, mesh))
    return jax.device_get(state)


def test_uniform_shuffle_resumes_bit_exactly_on_8_devices():
  """The permutation is drawn from fold_in(state.rng, state.step): 2 + 2
  steps through a host copy of the state (what a checkpoint holds) end bit
  for bit where 4 uninterrupted steps do."""
  config = tiny_config(bn_groups_per_device=1)   # 8 devices x 1 group
  assert config.key_bn == "shuffle"
  batches = list(_batches(4))
  mesh, state, step = build_unguarded(config, 8)
  initial = jax.device_get(state)
  whole = _steps(step, mesh, initial, batches)
  resumed = _steps(step, mesh, _steps(step, mesh, initial, batches[:2]),
                   batches[2:])
  assert int(resumed.step) == 4
  paths = jax.tree_util.tree_flatten_with_path(whole)[0]
  for (path, want), got in zip(paths, jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want),
                                  err_msg=jax.tree_util.keystr(path))
  # The queue holds 4 x 32 real keys of a 96-key FIFO: the pointer wrapped.
  assert int(whole.extra["queue_ptr"]) == 32
