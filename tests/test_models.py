"""Tests for the ResNet encoders, the projection head and `create_encoder`.

Full-size models are checked with `jax.eval_shape` only (no FLOPs); real
computation uses TinyResNet at 16px, which XLA:CPU runs quickly.
"""

import os
import sys

# conftest.py normally sets this; the guard keeps the module runnable alone
# without touching a jax that is already initialised.
if 'jax' not in sys.modules:
  os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax.errors import ConfigError
from contrastive_jax.models import ENCODERS, ProjectionHead, create_encoder
from contrastive_jax.models import input_norm, resnet

KEY = jax.random.key(0)


def _images(batch=4, size=16, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def _abstract_init(model, size, batch=2):
  """Variables of `model` as ShapeDtypeStructs, without running it."""
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(KEY, x, train=False), x)


def _num_params(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _last_block_output(model, size):
  """Shape of the last residual block's output feature map (abstractly)."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)

  def run(x):
    variables = model.init(KEY, x, train=False)
    _, state = model.apply(
        variables, x, train=False, capture_intermediates=True,
        mutable=['intermediates'])
    return state['intermediates']

  inter = jax.eval_shape(run, x)
  last = f'stage{len(model.stage_sizes)}_block{model.stage_sizes[-1]}'
  return inter[last]['__call__'][0].shape


def _init(model, x):
  # Eager on purpose: the per-op executables are cached and reused by the
  # eager `apply` calls below, which a jitted init would not warm up.
  return model.init(KEY, x, train=False)


@pytest.fixture(scope='module')
def tiny():
  model = create_encoder('tiny_resnet', cifar_stem=True)
  variables = _init(model, _images())
  return model, variables


# ---------------------------------------------------------------- encoders --


def test_tiny_output_shape_and_dtype(tiny):
  model, variables = tiny
  h = model.apply(variables, _images(), train=False)
  assert h.shape == (4, model.feature_dim) == (4, 16)
  assert h.dtype == jnp.float32
  assert np.all(np.isfinite(h))


@pytest.mark.parametrize('name,width,feature_dim', [
    ('resnet18', 1, 512), ('resnet18', 2, 1024),
    ('resnet50', 1, 2048), ('resnet50', 2, 4096),
])
def test_full_size_feature_dims(name, width, feature_dim):
  model = create_encoder(name, width_multiplier=width)
  assert model.feature_dim == feature_dim
  variables = _abstract_init(model, 64)
  h = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3)), train=False),
      variables)
  assert h.shape == (2, feature_dim)
  assert h.dtype == jnp.float32


def test_param_counts_match_torchvision_without_fc():
  # torchvision resnet18/resnet50 totals minus their fc layer (513,000 and
  # 2,049,000): the architectures are the same, so counts match exactly.
  assert _num_params(
      _abstract_init(create_encoder('resnet18'), 224)['params']) == 11_176_512
  assert _num_params(
      _abstract_init(create_encoder('resnet50'), 224)['params']) == 23_508_032


def test_width_multiplier_scales_resnet50_like_simclr():
  # SimCLR Table: ResNet-50 (2x) 94M, (4x) 375M parameters.
  params = _abstract_init(create_encoder('resnet50', width_multiplier=2), 64)
  assert round(_num_params(params['params']) / 1e6) == 94


def test_stems_downsample_as_documented():
  # ImageNet stem: /4 before the stages, then /8 across stages 2-4.
  imagenet = create_encoder('resnet18')
  assert _last_block_output(imagenet, 224) == (1, 7, 7, 512)
  assert _last_block_output(imagenet, 32) == (1, 1, 1, 512)
  # CIFAR stem keeps full resolution into stage 1: 32 -> 4.
  cifar = create_encoder('resnet18', cifar_stem=True)
  assert _last_block_output(cifar, 32) == (1, 4, 4, 512)
  imagenet_vars = _abstract_init(imagenet, 32)['params']
  cifar_vars = _abstract_init(cifar, 32)['params']
  assert imagenet_vars['stem_conv']['kernel'].shape == (7, 7, 3, 64)
  assert cifar_vars['stem_conv']['kernel'].shape == (3, 3, 3, 64)


def test_strided_3x3_convs_pad_symmetrically_like_torchvision(tiny):
  # torchvision pads every 3x3 conv by 1 on each side. Flax's 'SAME' pads a
  # stride-2 conv of an even-sized input (0, 1) instead, which is what this
  # encoder did before: those checkpoints compute other features.
  model, variables = tiny
  _, state = model.apply(variables, _images(), train=False,
                         capture_intermediates=True, mutable=['intermediates'])
  inter = state['intermediates']
  x = inter['stage1_block1']['__call__'][0]  # [4, 16, 16, 8]: even-sized
  kernel = variables['params']['stage2_block1']['conv1']['kernel']
  conv = lambda padding: jax.lax.conv_general_dilated(
      x, kernel, (2, 2), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision='highest')
  got = inter['stage2_block1']['conv1']['__call__'][0]
  np.testing.assert_allclose(got, conv(((1, 1), (1, 1))), rtol=1e-5,
                             atol=1e-5)
  assert not np.allclose(got, conv('SAME'), atol=1e-3)


def test_bfloat16_computes_in_bf16_but_keeps_float32_params_and_output():
  model = create_encoder('tiny_resnet', cifar_stem=True, dtype=jnp.bfloat16)
  variables = _init(model, _images())
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  h, state = model.apply(
      variables, _images(), train=False, capture_intermediates=True,
      mutable=['intermediates'])
  assert h.dtype == jnp.float32
  block_out = state['intermediates']['stage1_block1']['__call__'][0]
  stem_out = state['intermediates']['stem_conv']['__call__'][0]
  assert block_out.dtype == stem_out.dtype == jnp.bfloat16


def test_batch_stats_update_only_in_training(tiny):
  model, variables = tiny
  _, train_state = model.apply(
      variables, _images(seed=1), train=True, mutable=['batch_stats'])
  _, eval_state = model.apply(
      variables, _images(seed=1), train=False, mutable=['batch_stats'])
  old = jax.tree.leaves(variables['batch_stats'])
  assert all(not np.allclose(a, b)
             for a, b in zip(old, jax.tree.leaves(train_state['batch_stats'])))
  assert all(np.array_equal(a, b)
             for a, b in zip(old, jax.tree.leaves(eval_state['batch_stats'])))


def test_init_zeroes_last_bn_scale_and_uses_simclr_fan_in(tiny):
  _, variables = tiny
  block = variables['params']['stage2_block1']
  np.testing.assert_array_equal(block['bn2']['scale'], 0.0)
  np.testing.assert_array_equal(block['bn1']['scale'], 1.0)
  np.testing.assert_array_equal(block['proj_bn']['scale'], 1.0)
  kernel = np.asarray(block['conv2']['kernel'])  # 3x3, 16 -> 16
  # The default is SimCLR's (resnet.py:276): std sqrt(1 / fan_in).
  fan_in = 3 * 3 * kernel.shape[-2]
  assert kernel.std() == pytest.approx(np.sqrt(1.0 / fan_in), rel=0.1)
  r50 = _abstract_init(create_encoder('resnet50'), 32)['params']
  assert r50['stage1_block1']['bn3']['scale'].shape == (256,)


def test_every_batchnorm_is_named_bn():
  """decay_mask relies on this naming (see contrastive_jax.optim)."""
  params = _abstract_init(create_encoder('resnet50'), 32)['params']
  for path in traverse_util.flatten_dict(params):
    module, leaf = path[-2], path[-1]
    if leaf == 'kernel':
      assert 'conv' in module
    else:
      assert leaf in ('scale', 'bias') and 'bn' in module, path


def _shard_batch_stats(bn_axis_name, x):
  """Runs one training forward pass on 8 shards; returns per-shard stats."""
  mesh = jax.make_mesh((8,), ('data',))
  model = create_encoder(
      'tiny_resnet', cifar_stem=True, bn_axis_name=bn_axis_name)
  variables = _init(create_encoder('tiny_resnet', cifar_stem=True), x)

  def step(variables, x):
    h, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
    # A leading shard axis lets unsynchronised (per-shard) stats come out too.
    return h, jax.tree.map(lambda s: s[None], state['batch_stats'])

  P = jax.sharding.PartitionSpec
  run = jax.jit(jax.shard_map(
      step, mesh=mesh, in_specs=(P(), P('data')),
      out_specs=(P('data'), P('data'))))
  # make_mesh defaults to Explicit axes, where inputs must already carry the
  # shardings that in_specs names, as the real training loop's do.
  x = jax.device_put(x, jax.sharding.NamedSharding(mesh, P('data')))
  return run(variables, x)


@pytest.fixture(scope='module')
def global_bn_reference():
  if jax.device_count() < 8:
    pytest.skip('needs 8 (fake) devices: XLA_FLAGS set after jax started')
  x = _images(batch=16, seed=2)
  model = create_encoder('tiny_resnet', cifar_stem=True)
  variables = _init(model, x)
  h, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  return x, h, state['batch_stats']


def test_synchronized_bn_matches_single_device_batch(global_bn_reference):
  x, h_ref, stats_ref = global_bn_reference
  h, stats = _shard_batch_stats('data', x)
  np.testing.assert_allclose(h, h_ref, rtol=1e-4, atol=1e-5)
  for ref, per_shard in zip(jax.tree.leaves(stats_ref),
                            jax.tree.leaves(stats)):
    for shard in per_shard:
      np.testing.assert_allclose(shard, ref, rtol=1e-4, atol=1e-6)


def test_unsynchronized_bn_uses_per_shard_statistics(global_bn_reference):
  x, _, stats_ref = global_bn_reference
  _, stats = _shard_batch_stats(None, x)
  mean_ref = stats_ref['stem_bn']['mean']
  for shard_mean in stats['stem_bn']['mean']:
    assert not np.allclose(shard_mean, mean_ref, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------- registry --


def test_create_encoder_knows_every_documented_name():
  assert set(ENCODERS) == {
      'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
      'tiny_resnet', 'small_resnet'}
  small = create_encoder('small_resnet', cifar_stem=True)
  assert small.stage_sizes == (1, 1, 1) and small.feature_dim == 64
  assert create_encoder('resnet101', width_multiplier=4).feature_dim == 8192
  assert isinstance(create_encoder('resnet34'), resnet.ResNet)


@pytest.mark.parametrize('kwargs,field,allowed', [
    (dict(name='resnet51'), 'model', 'resnet50'),
    (dict(name='resnet50', width_multiplier=3), 'width_multiplier', '1, 2, 4'),
    (dict(name='resnet50', width_multiplier=True), 'width_multiplier', '4'),
])
def test_create_encoder_errors_name_the_field(kwargs, field, allowed):
  with pytest.raises(ConfigError) as error:
    create_encoder(**kwargs)
  message = str(error.value)
  assert message.startswith(field) and allowed in message
  assert '\n' not in message


# ------------------------------------------------------------------- head --


def _head_variables(head, dim=16, batch=4):
  h = jax.random.normal(jax.random.key(3), (batch, dim))
  return h, head.init(KEY, h, train=False)


@pytest.mark.parametrize('num_layers', [1, 2, 3])
def test_head_layers_and_last_layer_without_bias(num_layers):
  head = ProjectionHead(num_layers=num_layers, output_dim=8)
  h, variables = _head_variables(head)
  params = variables['params']
  assert sorted(params) == [f'dense{i}' for i in range(1, num_layers + 1)]
  assert set(params[f'dense{num_layers}']) == {'kernel'}
  for i in range(1, num_layers):
    assert set(params[f'dense{i}']) == {'kernel', 'bias'}
    assert params[f'dense{i}']['kernel'].shape[1] == 16  # hidden = input dim
  assert 'batch_stats' not in variables
  z = head.apply(variables, h, train=True)
  assert z.shape == (4, 8) and z.dtype == jnp.float32


def test_linear_head_is_linear():
  head = ProjectionHead(num_layers=1, output_dim=8)
  h, variables = _head_variables(head)
  np.testing.assert_allclose(
      head.apply(variables, 2.0 * h, train=False),
      2.0 * head.apply(variables, h, train=False), rtol=1e-5)


def test_bn_head_matches_simclr_v2():
  head = ProjectionHead(num_layers=3, hidden_dim=32, output_dim=8, use_bn=True)
  h, variables = _head_variables(head)
  params = variables['params']
  assert set(params) == {'dense1', 'dense2', 'dense3', 'bn1', 'bn2', 'bn_out'}
  assert all(set(params[f'dense{i}']) == {'kernel'} for i in (1, 2, 3))
  assert params['dense2']['kernel'].shape == (32, 32)
  assert set(params['bn_out']) == {'scale'}  # no learnable centre
  assert set(variables['batch_stats']) == {'bn1', 'bn2', 'bn_out'}
  z, state = head.apply(variables, h, train=True, mutable=['batch_stats'])
  assert z.shape == (4, 8)
  # Training-mode BN without centre: each output unit has zero batch mean.
  np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
  assert not np.allclose(state['batch_stats']['bn1']['mean'], 0.0)


def test_head_bf16_keeps_float32_output():
  head = ProjectionHead(use_bn=True, dtype=jnp.bfloat16)
  h, variables = _head_variables(head)
  z = head.apply(variables, h, train=False)
  assert z.dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_head_rejects_zero_layers():
  with pytest.raises(ConfigError, match='num_layers'):
    _head_variables(ProjectionHead(num_layers=0))



# --- Reference-following init and input normalisation (issue 13) ---------

@pytest.mark.parametrize('name, want_std', [
    # SimCLR: TF variance_scaling_initializer() = scale 1, fan_in, truncated
    # normal, corrected to std sqrt(1/fan_in); fan_in = 3*3*64.
    ('simclr', np.sqrt(1.0 / (3 * 3 * 64))),
    # torchvision: kaiming_normal_(fan_out, relu) = sqrt(2/fan_out),
    # fan_out = 3*3*256.
    ('torchvision', np.sqrt(2.0 / (3 * 3 * 256))),
])
def test_conv_init_std_follows_its_reference(name, want_std):
  kernel = resnet.CONV_INITS[name](KEY, (3, 3, 64, 256), jnp.float32)
  assert np.std(np.asarray(kernel)) == pytest.approx(want_std, rel=0.02)
  if name == 'simclr':  # truncated at 2 std of the untruncated normal
    assert np.max(np.abs(kernel)) < 2 * want_std / 0.8796 + 1e-6


def test_encoder_uses_the_named_conv_init():
  # The initializers on a ResNet-18 3x3 512->512 kernel: their std.
  fan = 9 * 512
  for name, want in (('simclr', np.sqrt(1 / fan)),
                     ('torchvision', np.sqrt(2 / fan))):
    kernel = resnet.CONV_INITS[name](KEY, (3, 3, 512, 512))
    assert np.std(np.asarray(kernel)) == pytest.approx(want, rel=0.02)
  # The encoder uses the one it is named: a tiny ResNet's 3x3 16->16 conv
  # (fan_in = fan_out) has sqrt(2) times the std under torchvision's.
  stds = {}
  for name in ('simclr', 'torchvision'):
    model = create_encoder('tiny_resnet', conv_init=name)
    params = model.init(KEY, _images(), train=False)['params']
    stds[name] = np.std(np.asarray(params['stage2_block1']['conv2']['kernel']))
  assert stds['torchvision'] / stds['simclr'] == pytest.approx(np.sqrt(2),
                                                               rel=0.08)


@pytest.mark.parametrize('zero_init', [True, False])
def test_zero_init_residual_flag(zero_init):
  model = create_encoder('tiny_resnet', zero_init_residual=zero_init)
  params = model.init(KEY, _images(), train=False)['params']
  gamma = params['stage1_block1']['bn2']['scale']
  np.testing.assert_array_equal(gamma, 0.0 if zero_init else 1.0)
  # Only the block's last BN: the others start at one either way.
  np.testing.assert_array_equal(params['stage1_block1']['bn1']['scale'], 1.0)


def test_input_norm_is_the_first_thing_the_encoder_does():
  x = jax.random.uniform(KEY, (2, 16, 16, 3))
  mean, std = input_norm.INPUT_NORMS['imagenet']
  plain = create_encoder('tiny_resnet')
  normed = create_encoder('tiny_resnet', input_norm='imagenet')
  variables = plain.init(KEY, x, train=False)
  got = normed.apply(variables, x, train=False)
  want = plain.apply(variables, (x - np.array(mean)) / np.array(std),
                     train=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert input_norm.INPUT_NORMS['cifar10'] == ((0.4914, 0.4822, 0.4465),
                                           (0.2023, 0.1994, 0.2010))
  assert mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225)
  with pytest.raises(ConfigError, match='input_norm'):
    create_encoder('tiny_resnet', input_norm='bogus')
  with pytest.raises(ConfigError, match='conv_init'):
    create_encoder('tiny_resnet', conv_init='bogus')
