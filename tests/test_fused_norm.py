"""The minimal-pass BatchNorm (models/fused_norm.py) against flax's.

Values, running statistics and gradients (w.r.t. x, scale and bias, of a
scalar loss with random cotangents) of `FusedBatchNorm` equal
`nn.BatchNorm`'s, and `FusedGroupBatchNorm`'s equal `GroupBatchNorm`'s, to
float32 rounding: on one device and under `shard_map` over 8 devices.
"""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.errors import ConfigError
from contrastive_jax.models import (create_encoder, encoder_from_config,
                                    fused_norm, norm)

AXIS = parallel.DATA_AXIS


def _data(shape, seed=0):
  """x with a mean and scale away from 0/1, and a cotangent for it."""
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=shape) * 2 + 1).astype(np.float32)
  return x, rng.normal(size=shape).astype(np.float32)


def _variables(module, x, seed=1):
  """`module`'s variables with random params and running statistics, so
  that neither a unit scale nor a zero bias hides a mistake."""
  variables = module.init(jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  rand = lambda l, lo: jnp.asarray(rng.uniform(lo, 2, l.shape), jnp.float32)
  return {'params': jax.tree.map(lambda l: rand(l, -2),
                                 variables.get('params', {})),
          'batch_stats': jax.tree.map(lambda l: rand(l, 0.5),
                                      variables['batch_stats'])}


def _step(module, **call_kw):
  """(variables, x, ct) -> (y, new batch_stats, d params, dx) of
  sum(y * ct): one device's part of a `shard_map`ped step, or all of it.
  `call_kw` go to the module's call (the ResNet's train=True)."""
  def step(variables, x, ct, axis_name=None):
    def loss(params, x):
      y, new = module.apply({**variables, 'params': params}, x,
                            mutable=['batch_stats'], **call_kw)
      total = jnp.sum(y.astype(jnp.float32) * ct)
      if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
      return total, (y, new['batch_stats'])
    (_, (y, stats)), (d_params, dx) = jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True)(variables['params'], x)
    return y, stats, d_params, dx
  return step


def _run(module, variables, x, ct, devices=None, **call_kw):
  """`_step` on one device (devices=None) or shard_mapped over `devices`,
  batch split, variables replicated; NumPy out."""
  step = _step(module, **call_kw)
  if devices is None:
    out = jax.jit(step)(variables, x, ct)
  else:
    mesh = parallel.make_data_mesh(jax.devices()[:devices])
    mapped = jax.jit(jax.shard_map(
        lambda v, x, ct: step(v, x, ct, AXIS), mesh=mesh,
        in_specs=(P(), P(AXIS), P(AXIS)),
        out_specs=(P(AXIS), P(), P(), P(AXIS))))
    split = NamedSharding(mesh, P(AXIS))
    with jax.set_mesh(mesh):
      out = mapped(variables, jax.device_put(x, split),
                   jax.device_put(ct, split))
  return jax.tree.map(lambda a: np.asarray(a, np.float32), out)


def _assert_close(got, want, rtol=1e-5, atol=1e-5):
  names = ('y', 'batch_stats', 'd params', 'dx')
  for name, g, w in zip(names, got, want):
    assert jax.tree.structure(g) == jax.tree.structure(w), name
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
      # Tolerances relative to the array's scale, as float32 rounding is.
      np.testing.assert_allclose(a, b, rtol=rtol,
                                 atol=atol * max(1.0, np.abs(b).max()),
                                 err_msg=name)


@pytest.mark.parametrize('shape,affine', [
    ((16, 3, 3, 4), dict()),
    ((24, 5), dict()),                                  # a head's BN
    ((16, 2, 2, 3), dict(use_bias=False, use_scale=False)),  # bn_out
])
def test_one_device_equals_flax_batchnorm(shape, affine):
  x, ct = _data(shape)
  kw = dict(use_running_average=False, momentum=0.9, **affine)
  flax_bn = nn.BatchNorm(**kw)
  variables = _variables(flax_bn, x)
  _assert_close(_run(fused_norm.FusedBatchNorm(**kw), variables, x, ct),
                _run(flax_bn, variables, x, ct))


@pytest.mark.parametrize('groups', [1, 4])
def test_one_device_groups_equal_group_batchnorm(groups):
  x, ct = _data((16, 3, 3, 4))
  ref = norm.GroupBatchNorm(num_groups=groups)
  variables = _variables(ref, x)
  _assert_close(_run(norm.FusedGroupBatchNorm(num_groups=groups),
                     variables, x, ct),
                _run(ref, variables, x, ct))


def test_eight_devices_global_equals_flax_and_one_device():
  # Global BN: statistics (and the backward's two sums) over all 8 devices.
  x, ct = _data((32, 2, 2, 4))
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9,
                         axis_name=AXIS)
  fused = fused_norm.FusedBatchNorm(use_running_average=False, momentum=0.9,
                                    axis_name=AXIS)
  variables = _variables(flax_bn, x)
  got = _run(fused, variables, x, ct, devices=8)
  _assert_close(got, _run(flax_bn, variables, x, ct, devices=8))
  # ... and what one device computes from the whole batch.
  one = fused_norm.FusedBatchNorm(use_running_average=False, momentum=0.9)
  _assert_close(got, _run(one, variables, x, ct))


def test_eight_devices_with_groups_equal_group_batchnorm():
  # Per-group statistics on each device; the running averages are averaged
  # over the groups and the devices, so replicated.
  x, ct = _data((32, 2, 2, 4))
  ref = norm.GroupBatchNorm(num_groups=2, axis_name=AXIS)
  fused = norm.FusedGroupBatchNorm(num_groups=2, axis_name=AXIS)
  variables = _variables(ref, x)
  got = _run(fused, variables, x, ct, devices=8)
  _assert_close(got, _run(ref, variables, x, ct, devices=8))
  # 8 devices x 2 groups = one device with 16 groups.
  one = norm.FusedGroupBatchNorm(num_groups=16)
  _assert_close(got, _run(one, variables, x, ct))


@pytest.mark.parametrize('groups', [None, 2])
def test_bfloat16_matches_flax_to_bfloat16_rounding(groups):
  x, ct = _data((16, 3, 3, 8))
  x = jnp.asarray(x, jnp.bfloat16)
  make = lambda impl: norm.batch_norm(
      train=True, groups=groups, axis_name=None, momentum=0.9, epsilon=1e-5,
      dtype=jnp.bfloat16, impl=impl)()
  variables = _variables(make('flax'), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(variables))
  y, _ = make('fused').apply(variables, x, mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  got = _run(make('fused'), variables, x, ct)
  want = _run(make('flax'), variables, x, ct)
  # Statistics and parameter gradients stay float32; y and dx are bfloat16
  # (8 significant bits), so one rounding apart at most.
  _assert_close(got[1:3], want[1:3], rtol=1e-5, atol=1e-5)
  for a, b in (got[0], want[0]), (got[3], want[3]):
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2 * np.abs(b).max())


@pytest.mark.parametrize('groups', [None, 2])
def test_frozen_is_the_same_affine(groups):
  x, ct = _data((8, 2, 2, 4))
  make = lambda impl: norm.batch_norm(
      train=False, groups=groups, axis_name=None, momentum=0.9, epsilon=1e-5,
      dtype=jnp.float32, impl=impl)()
  variables = _variables(make('flax'), x)
  got = _run(make('fused'), variables, x, ct)
  _assert_close(got, _run(make('flax'), variables, x, ct))
  # The statistics were read, not updated.
  jax.tree.map(np.testing.assert_array_equal, got[1],
               jax.tree.map(np.asarray, variables['batch_stats']))


def test_one_reduction_per_pass_and_one_all_reduce_per_pass():
  # The structure the module exists for: to compute y and pull a cotangent
  # back, ONE (two-output) reduction over the activation forward and ONE
  # backward, and one all-reduce of the stacked sums in each direction.
  x, ct = _data((32, 2, 2, 4))
  module = fused_norm.FusedBatchNorm(use_running_average=False,
                                     axis_name=AXIS)
  variables = _variables(module, x)

  def forward_backward(variables, x, ct):
    apply = lambda params, x: module.apply(
        {**variables, 'params': params}, x, mutable=['batch_stats'])
    _, pull_back, stats = jax.vjp(apply, variables['params'], x,
                                  has_aux=True)
    return stats, pull_back(ct)
  mesh = parallel.make_data_mesh(jax.devices()[:8])
  mapped = jax.shard_map(forward_backward, mesh=mesh,
                         in_specs=(P(), P(AXIS), P(AXIS)),
                         out_specs=(P(), (P(), P(AXIS))))
  split = NamedSharding(mesh, P(AXIS))
  with jax.set_mesh(mesh):
    jaxpr = jax.make_jaxpr(mapped)(variables, jax.device_put(x, split),
                                   jax.device_put(ct, split))
  eqns = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      eqns.append(eqn)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jaxpr.jaxpr)
  local_size = x.size // 8
  over_x = [e for e in eqns if 'reduce' in e.primitive.name and
            any(getattr(v.aval, 'size', 0) >= local_size for v in e.invars)]
  assert [(e.primitive.name, len(e.outvars)) for e in over_x] == [
      ('reduce', 2)] * 2, over_x
  collectives = [e.invars[0].aval.shape for e in eqns
                 if e.primitive.name.startswith('psum')]
  # The stacked (sum, sum of squares) and (sum dy, sum dy*x_hat), then the
  # scale and bias gradients summed over devices as for any replicated
  # parameter.
  assert sorted(collectives) == [(2, 1, 4), (2, 1, 4), (4,), (4,)], (
      collectives)


def _resnet_run(impl, x, ct, devices=None, groups=None):
  """tiny_resnet's (h, batch_stats, d params, dx) of sum(h * ct)."""
  model = create_encoder('tiny_resnet', cifar_stem=True, bn_impl=impl,
                         bn_axis_name=AXIS if devices else None,
                         bn_groups=groups, zero_init_residual=False)
  variables = model.init(jax.random.key(0), x[:2], train=False)
  return _run(model, variables, x, ct, devices=devices, train=True)


@pytest.mark.parametrize('devices,groups', [(None, None), (8, None), (8, 2)])
def test_tiny_resnet_fused_equals_flax(devices, groups):
  rng = np.random.default_rng(2)
  x = rng.uniform(size=(16, 8, 8, 3)).astype(np.float32)
  ct = rng.normal(size=(16, 16)).astype(np.float32)
  got = _resnet_run('fused', x, ct, devices, groups)
  want = _resnet_run('flax', x, ct, devices, groups)
  _assert_close(got, want, rtol=1e-4, atol=5e-5)


def test_choice_is_checked_and_read_from_the_config():
  with pytest.raises(ValueError, match='impl must be one of flax, fused'):
    norm.batch_norm(train=True, groups=None, axis_name=None, momentum=0.9,
                    epsilon=1e-5, dtype=jnp.float32, impl='cudnn')
  with pytest.raises(ConfigError, match='bn_impl must be one of'):
    create_encoder('tiny_resnet', bn_impl='cudnn')
  config = ml_collections.ConfigDict(dict(
      model='tiny_resnet', width_multiplier=1, cifar_stem=True,
      half_precision=False))
  assert encoder_from_config(config, bn_axis_name=None).bn_impl == 'flax'
  config.bn_impl = 'fused'
  assert encoder_from_config(config, bn_axis_name=None).bn_impl == 'fused'
  # Same variables either way: checkpoints are interchangeable.
  x = jnp.zeros((2, 8, 8, 3))
  shapes = lambda impl: jax.tree.map(
      lambda l: (l.shape, l.dtype), jax.eval_shape(
          lambda: create_encoder('tiny_resnet', cifar_stem=True,
                                 bn_impl=impl).init(
                                     jax.random.key(0), x, train=True)))
  assert shapes('fused') == shapes('flax')
