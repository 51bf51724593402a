"""Tests for the ViT encoders (models/vit.py), their registry entries and
their weight-decay mask.

Full-size ViTs are built with `jax.eval_shape` only; real computation uses
TinyViT (width 32, depth 2, patch 4) at 8-16px, and the init statistics a
one-block ViT-S-wide model.
"""

import functools
import math
import os
import sys

# conftest.py normally sets this; the guard keeps the module runnable alone
# without touching a jax that is already initialised.
if 'jax' not in sys.modules:
  os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import special

from contrastive_jax import weight_decay
from contrastive_jax.errors import ConfigError
from contrastive_jax.models import VIT_ENCODERS, create_encoder
from contrastive_jax.models import encoder_from_config, input_norm, resnet, vit

KEY = jax.random.key(0)


def _images(batch=2, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


def _abstract_params(model, size=224):
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(KEY, x, train=False), x)
  assert set(variables) == {'params'}  # no BatchNorm statistics
  return variables['params']


def _init(model, x):
  """`model`'s params, jitted: XLA:CPU compiles a tiny ViT faster than it
  runs one op by op."""
  return jax.jit(lambda x: model.init(KEY, x, train=False))(x)['params']


@functools.cache
def _jitted_apply(model, train):
  return jax.jit(lambda p, x: model.apply({'params': p}, x, train=train))


def _apply(model, params, x, train=False):
  """h of `model` (hashable) at `params`, one compile per model and shape."""
  return _jitted_apply(model, train)(params, x)


def _num_params(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


# ------------------------------------------------------------ param counts --


def _timm_count(width, patch, image=224, depth=12):
  """timm's VisionTransformer without the classifier, pos table included."""
  d = width
  tokens = (image // patch) ** 2 + 1
  block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (
      d * 4 * d + 4 * d + 4 * d * d + d)
  return (3 * patch * patch * d + d) + d + tokens * d + depth * block + 2 * d


def test_formula_gives_timms_counts():
  # timm's vit_small/base_patch16_224 minus the 1000-way head (D*1000+1000).
  assert _timm_count(384, 16) == 21_665_664
  assert _timm_count(768, 16) == 85_798_656
  assert _timm_count(192, 16) == 5_717_416 - 193_000


@pytest.mark.parametrize('name,patch,expected', [
    ('vit_small', 16, 21_665_664),
    ('vit_base', 16, 85_798_656),
    ('vit_tiny', 16, 5_524_416),
    ('vit_small', 8, _timm_count(384, 8)),
])
def test_param_counts_match_timm(name, patch, expected):
  model = create_encoder(name, patch_size=patch)
  params = _abstract_params(model)
  tokens = (224 // patch) ** 2 + 1
  assert _num_params(params) + tokens * model.width == expected
  assert 'pos_embed' not in params  # a constant, not a parameter
  assert params['patch_embed']['kernel'].shape == (patch, patch, 3,
                                                   model.width)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))


def test_patch_8_changes_only_the_patch_projection_and_positions():
  s16 = _abstract_params(create_encoder('vit_small'))
  s8 = _abstract_params(create_encoder('vit_small', patch_size=8))
  # Trainable: only the patch kernel shrinks, 3 * (8^2 - 16^2) * 384.
  assert _num_params(s8) - _num_params(s16) == 3 * (64 - 256) * 384
  assert jax.tree.map(jnp.shape, s8['block1']) == jax.tree.map(
      jnp.shape, s16['block1'])
  # 785 vs 197 rows of fixed positions.
  assert _timm_count(384, 8) - _timm_count(384, 16) == (
      3 * (64 - 256) * 384 + (785 - 197) * 384)


def test_sizes_and_feature_dims():
  expected = {'vit_tiny': (192, 3), 'vit_small': (384, 12),
              'vit_base': (768, 12)}
  for name, (width, heads) in expected.items():
    model = create_encoder(name)
    assert (model.feature_dim, model.num_heads, model.depth,
            model.patch_size, model.mlp_ratio) == (width, heads, 12, 16, 4)


# -------------------------------------------------------- sin-cos table --


def _vits_table(h, w, dim, temperature=10000.):
  """vits.py:53-68 line by line, in NumPy float64."""
  grid_w = np.arange(w, dtype=np.float64)
  grid_h = np.arange(h, dtype=np.float64)
  grid_w, grid_h = np.meshgrid(grid_w, grid_h, indexing='ij')  # torch's
  pos_dim = dim // 4
  omega = np.arange(pos_dim, dtype=np.float64) / pos_dim
  omega = 1. / (temperature ** omega)
  out_w = np.einsum('m,d->md', grid_w.flatten(), omega)
  out_h = np.einsum('m,d->md', grid_h.flatten(), omega)
  pos_emb = np.concatenate(
      [np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)], axis=1)
  return np.concatenate([np.zeros((1, dim)), pos_emb])


@pytest.mark.parametrize('dim', [8, 32])
def test_sincos_table_matches_vits_on_a_2x2_grid(dim):
  table = vit.sincos_position_embedding(2, 2, dim)
  assert table.shape == (5, dim) and table.dtype == np.float32
  np.testing.assert_allclose(table, _vits_table(2, 2, dim), rtol=0,
                             atol=1e-7)
  np.testing.assert_array_equal(table[0], 0.)  # the cls token's row


def test_sincos_table_is_row_major():
  # Patch (r, c) = token 1 + r * 3 + c: first half from r, second from c.
  table = vit.sincos_position_embedding(2, 3, 8)
  omega = 1. / 10000. ** (np.arange(2) / 2)
  r, c = 1, 2
  np.testing.assert_allclose(
      table[1 + r * 3 + c],
      np.concatenate([np.sin(r * omega), np.cos(r * omega),
                      np.sin(c * omega), np.cos(c * omega)]), atol=1e-7)


# --------------------------------------------------------- tiny forward --


@pytest.fixture(scope='module')
def tiny():
  """(model, params, images): TinyViT at 16px, 16 patches of 4x4."""
  model = vit.TinyViT()
  x = _images()
  return model, _init(model, x), x


def _layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _dense(x, p):
  return x @ np.float64(p['kernel']) + np.float64(p['bias'])


def _numpy_vit(params, images, num_heads, patch):
  """timm's VisionTransformer.forward_features (pre-LN, exact GELU, the
  final-normed cls token) in NumPy float64, from our params."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, h, w, c = images.shape
  gh, gw = h // patch, w // patch
  patches = np.asarray(images, np.float64).reshape(b, gh, patch, gw, patch, c)
  patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
  kernel = p['patch_embed']['kernel'].reshape(-1, p['cls_token'].shape[-1])
  x = patches @ kernel + p['patch_embed']['bias']
  d = x.shape[-1]
  x = np.concatenate([np.broadcast_to(p['cls_token'], (b, 1, d)), x], 1)
  x = x + _vits_table(gh, gw, d)
  hd = d // num_heads
  for i in range(1, 1 + sum(k.startswith('block') for k in p)):
    blk = p[f'block{i}']
    y = _layer_norm(x, **blk['norm1'])
    qkv = _dense(y, blk['attn']['qkv']).reshape(b, -1, 3, num_heads, hd)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # timm's permute(2, 0, 3, 1, 4)
    attn = q @ k.swapaxes(-2, -1) * hd ** -0.5
    attn = np.exp(attn - attn.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    y = (attn @ v).transpose(0, 2, 1, 3).reshape(b, -1, d)
    x = x + _dense(y, blk['attn']['proj'])
    y = _dense(_layer_norm(x, **blk['norm2']), blk['mlp']['fc1'])
    y = 0.5 * y * (1 + special.erf(y / np.sqrt(2)))
    x = x + _dense(y, blk['mlp']['fc2'])
  return _layer_norm(x, **p['norm'])[:, 0]


def _perturbed(params, seed=1):
  """Params with every leaf moved off its (zero / one / 1e-6) init, so the
  reference check sees biases, LayerNorm affines and the cls token."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: np.float32(leaf + 0.1 * rng.normal(size=leaf.shape)),
      params)


def test_tiny_forward_matches_numpy_reference(tiny):
  model, params, x = tiny
  params = _perturbed(params)
  h = _apply(model, params, x)
  assert h.shape == (2, 32) and h.dtype == jnp.float32
  np.testing.assert_allclose(
      h, _numpy_vit(params, x, num_heads=4, patch=4), rtol=1e-4, atol=1e-4)


def test_tiny_forward_is_finite_and_deterministic(tiny):
  model, params, x = tiny
  h = _apply(model, params, x)
  assert h.shape == (2, model.feature_dim) and h.dtype == jnp.float32
  assert np.isfinite(h).all()
  np.testing.assert_array_equal(h, _apply(model, params, x))
  # `train` changes nothing (no BatchNorm, no dropout).
  np.testing.assert_array_equal(h, _apply(model, params, x, train=True))


def test_h_depends_on_every_patch(tiny):
  model, params, x = tiny
  base = x[0]
  variants = [base]
  for r in range(4):
    for c in range(4):
      variants.append(base.at[4 * r:4 * r + 4, 4 * c:4 * c + 4].add(0.5))
  h = np.asarray(_apply(model, params, jnp.stack(variants)))
  change = np.abs(h[1:] - h[0]).max(axis=1)
  assert (change > 1e-4).all(), change


def test_input_norm_is_resnets(tiny):
  model, params, x = tiny
  mean, std = input_norm.INPUT_NORMS['imagenet']
  normed = _apply(vit.TinyViT(input_norm='imagenet'), params, x)
  manual = _apply(model, params, (x - jnp.array(mean)) / jnp.array(std))
  np.testing.assert_allclose(normed, manual, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_output(tiny):
  _, params, x = tiny
  model = vit.TinyViT(dtype=jnp.bfloat16)
  bf16_params = _abstract_params(model, size=16)
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree.leaves(bf16_params))
  h = _apply(model, params, x)
  assert h.dtype == jnp.float32
  ref = _apply(vit.TinyViT(), params, x)
  np.testing.assert_allclose(h, ref, atol=0.1)


def test_image_side_must_be_a_multiple_of_the_patch(tiny):
  model, params, _ = tiny
  with pytest.raises(ValueError, match='multiples of patch_size 4'):
    _apply(model, params, jnp.zeros((1, 14, 16, 3)))


def test_8px_images_make_a_2x2_grid(tiny):
  # The params do not depend on the image size (the positions are fixed).
  model, params, _ = tiny
  h = _apply(model, params, _images(size=8))
  assert h.shape == (2, 32) and np.isfinite(h).all()


# ------------------------------------------------------------------ init --


def test_init_follows_vits():
  # ViT-S's width and patch, one block, one 16px patch: real init is cheap.
  d = 384
  model = vit.ViT(width=d, depth=1, num_heads=12)
  params = _init(model, _images(1))
  cls = np.asarray(params['cls_token'])
  assert cls.shape == (1, 1, d)
  assert 0.85e-6 < cls.std() < 1.15e-6 and abs(cls.mean()) < 2e-7

  def check_uniform(kernel, bound):
    kernel = np.asarray(kernel)
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.99 * bound
    assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)

  # vits.py:45: sqrt(6 / (3 * 16 * 16 + 384)).
  check_uniform(params['patch_embed']['kernel'], math.sqrt(6 / (768 + 384)))
  blk = params['block1']
  # vits.py:36: per q/k/v, sqrt(6 / (384 + 384)).
  check_uniform(blk['attn']['qkv']['kernel'], math.sqrt(6 / (2 * d)))
  check_uniform(blk['attn']['proj']['kernel'], math.sqrt(6 / (2 * d)))
  check_uniform(blk['mlp']['fc1']['kernel'], math.sqrt(6 / (5 * d)))
  check_uniform(blk['mlp']['fc2']['kernel'], math.sqrt(6 / (5 * d)))
  flat = traverse_util.flatten_dict(params)
  for path, leaf in flat.items():
    if path[-1] == 'bias':
      np.testing.assert_array_equal(leaf, 0.)
    if path[-1] == 'scale':
      np.testing.assert_array_equal(leaf, 1.)


# ------------------------------------------------------------ decay mask --


def test_vit_decays_exactly_its_kernels():
  params = _abstract_params(create_encoder('vit_small'))
  flat = traverse_util.flatten_dict(weight_decay.decay_mask(params))
  decayed = {path for path, decay in flat.items() if decay}
  kernels = {path for path in flat if path[-1] == 'kernel'}
  assert decayed == kernels
  # Patch projection + 4 Dense per block.
  assert len(kernels) == 1 + 4 * 12
  excluded = set(flat) - decayed
  for path in [('cls_token',), ('norm', 'scale'), ('norm', 'bias'),
               ('block1', 'norm1', 'scale'), ('block12', 'norm2', 'bias'),
               ('block3', 'attn', 'qkv', 'bias'), ('patch_embed', 'bias')]:
    assert path in excluded, path


def test_decay_mask_layer_norm_names_and_leaves():
  leaf = np.zeros(2)
  params = {
      'LayerNorm_0': {'scale': leaf}, 'ln_f': {'scale': leaf},
      'final_norm': {'scale': leaf}, 'ln1': {'scale': leaf},
      'encoder': {'pos_embed': leaf, 'cls_token': leaf},
      'normal': {'kernel': leaf}, 'kiln': {'kernel': leaf},
      'norms': {'kernel': leaf},
  }
  got = traverse_util.flatten_dict(weight_decay.decay_mask(params))
  assert {path for path, decay in got.items() if decay} == {
      ('normal', 'kernel'), ('kiln', 'kernel'), ('norms', 'kernel')}


# -------------------------------------------------------------- registry --


def test_create_encoder_vit_rejects_resnet_only_fields():
  with pytest.raises(ConfigError, match='^width_multiplier must be 1'):
    create_encoder('vit_small', width_multiplier=2)
  with pytest.raises(ConfigError, match='^cifar_stem'):
    create_encoder('vit_small', cifar_stem=True)
  with pytest.raises(ConfigError, match='^patch_size must be one of 8, 16'):
    create_encoder('vit_small', patch_size=4)
  with pytest.raises(ConfigError, match='^patch_size applies to ViTs only'):
    create_encoder('resnet18', patch_size=8)
  with pytest.raises(ConfigError, match='vit_base'):
    create_encoder('vit_large')


def test_create_encoder_vit_ignores_batch_norm_fields():
  plain = create_encoder('vit_small')
  assert create_encoder(
      'vit_small', bn_axis_name='data', bn_groups=2, conv_init='torchvision',
      zero_init_residual=False) == plain
  assert create_encoder('vit_small', input_norm='imagenet', patch_size=8,
                        dtype=jnp.bfloat16) == vit.ViTSmall(
                            patch_size=8, input_norm='imagenet',
                            dtype=jnp.bfloat16)
  assert set(VIT_ENCODERS) == {'vit_tiny', 'vit_small', 'vit_base', 'tiny_vit'}


def test_encoder_from_config_reads_patch_size():
  config = ml_collections.ConfigDict(dict(
      model='vit_base', width_multiplier=1, cifar_stem=False,
      half_precision=False, input_norm='imagenet', patch_size=8))
  model = encoder_from_config(config, bn_axis_name='data')
  assert (model.width, model.patch_size, model.input_norm) == (
      768, 8, 'imagenet')
  del config.patch_size  # older configs: 16
  assert encoder_from_config(config, bn_axis_name=None).patch_size == 16

