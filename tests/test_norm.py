"""Per-group BatchNorm (MoCo's per-device BN, also on one device)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.models import create_encoder
from contrastive_jax.models.norm import GroupBatchNorm


def _x(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 3, 3, 4)) * 2 + 1).astype(np.float32)


def _apply(module, x):
  variables = module.init(jax.random.key(0), x)
  y, new = module.apply(variables, x, mutable=["batch_stats"])
  return np.asarray(y), jax.tree.map(np.asarray, new["batch_stats"])


def test_one_group_is_flax_batchnorm():
  x = _x()
  y, stats = _apply(GroupBatchNorm(num_groups=1), x)
  y_ref, stats_ref = _apply(
      nn.BatchNorm(use_running_average=False, momentum=0.9), x)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_each_group_is_normalised_alone_and_running_stats_average_groups():
  x = _x()
  y, stats = _apply(GroupBatchNorm(num_groups=4), x)
  groups = x.reshape(4, 4, 3, 3, 4).astype(np.float64)
  mean = groups.mean(axis=(1, 2, 3), keepdims=True)
  var = groups.var(axis=(1, 2, 3), keepdims=True)
  expected = ((groups - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["mean"], 0.1 * mean.mean(axis=0).ravel(),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["var"],
                             0.9 + 0.1 * var.mean(axis=0).ravel(), rtol=1e-5)


def test_eight_devices_equal_one_device_with_eight_groups():
  # The encoder on 8 devices (one BN group each, running statistics kept
  # replicated over 'data') computes what one device with 8 groups does.
  x = np.random.default_rng(1).uniform(size=(16, 8, 8, 3)).astype(np.float32)

  def run(num_devices, groups):
    model = create_encoder("tiny_resnet", cifar_stem=True, bn_groups=groups,
                           bn_axis_name=parallel.DATA_AXIS)
    variables = model.init(jax.random.key(0), x[:2], train=False)
    mesh = parallel.make_data_mesh(jax.devices()[:num_devices])

    def fwd(variables, x):
      h, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
      return h, new["batch_stats"]

    step = jax.jit(jax.shard_map(fwd, mesh=mesh, in_specs=(P(), P("data")),
                                 out_specs=(P("data"), P())))
    with jax.set_mesh(mesh):
      out = step(variables, jax.device_put(x, NamedSharding(mesh, P("data"))))
    return jax.tree.map(np.asarray, out)

  h8, stats8 = run(8, 1)
  h1, stats1 = run(1, 8)
  np.testing.assert_allclose(h8, h1, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats8), jax.tree.leaves(stats1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # And it differs from one BN over the whole batch.
  h_global, _ = run(1, 1)
  assert not np.allclose(h_global, h1, atol=1e-3)


def test_bfloat16_keeps_float32_params():
  module = GroupBatchNorm(num_groups=2, dtype=jnp.bfloat16)
  x = _x().astype(jnp.bfloat16)
  variables = module.init(jax.random.key(0), x)
  y, _ = module.apply(variables, x, mutable=["batch_stats"])
  assert y.dtype == jnp.bfloat16
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(variables))
