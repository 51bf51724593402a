"""DINO's ViT (models/vit.py with `position_embedding='learned'`,
`weight_init='dino'`; facebookresearch/dino vision_transformer.py @7c446df):
its learned table resized for other grids (models/positions.py) against a
NumPy transcription of torch's bicubic, its init, and the config fields.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from contrastive_jax import models
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.models import positions, vit


def _keys_weight(x, a=-0.75):
  """The cubic convolution kernel at distance x (Keys 1981), torch's A."""
  x = abs(x)
  if x <= 1:
    return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
  if x < 2:
    return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
  return 0.0


def torch_bicubic(image, out_h, out_w, scale_h, scale_w):
  """torch's `upsample_bicubic2d` (align_corners=False, a scale factor
  given), pixel by pixel in float64: output (y, x) reads the source point
  ((y + 0.5) / scale_h - 0.5, (x + 0.5) / scale_w - 0.5), 4 x 4 taps
  around its floor, indices clamped into the image. `image` [H, W, C]."""
  h, w = image.shape[:2]
  out = np.zeros((out_h, out_w, image.shape[2]))
  for y in range(out_h):
    sy = (y + 0.5) / scale_h - 0.5
    for x in range(out_w):
      sx = (x + 0.5) / scale_w - 0.5
      for i in range(math.floor(sy) - 1, math.floor(sy) + 3):
        for j in range(math.floor(sx) - 1, math.floor(sx) + 3):
          weight = _keys_weight(sy - i) * _keys_weight(sx - j)
          out[y, x] += weight * image[min(max(i, 0), h - 1),
                                      min(max(j, 0), w - 1)]
  return out


def dino_interpolate(table, grid_h, grid_w):
  """`interpolate_pos_encoding` (dino :174-194), float64: the table as it
  is for its own square grid, else the cls row and the patch grid resized
  with scale factors ((grid + 0.1) / G)."""
  g = math.isqrt(table.shape[1] - 1)
  if (grid_h, grid_w) == (g, g):
    return np.asarray(table, np.float64)
  patches = torch_bicubic(np.asarray(table[0, 1:], np.float64).reshape(
      g, g, -1), grid_h, grid_w, (grid_h + 0.1) / g, (grid_w + 0.1) / g)
  return np.concatenate([table[:, :1], patches.reshape(1, -1,
                                                       table.shape[-1])], 1)


def _table(g=14, d=8, seed=0):
  return (np.random.default_rng(seed).standard_normal((1, 1 + g * g, d))
          * 0.02).astype(np.float32)


@pytest.mark.parametrize("grid", [(6, 6), (7, 7), (28, 28), (4, 9),
                                  (14, 14)])
def test_resize_is_torchs_bicubic_with_dinos_scale(grid):
  """96 px crops (6 x 6 at patch 16), 112 px, 448 px, a non-square crop,
  and the table's own grid (returned as it is, :177-178)."""
  table = _table()
  want = dino_interpolate(table, *grid)
  np.testing.assert_allclose(positions.position_table(table, *grid), want,
                             rtol=0, atol=1e-7)
  got = jax.jit(lambda t: positions.position_table(t, *grid))(
      jnp.asarray(table))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
  if grid == (14, 14):
    assert positions.position_table(table, 14, 14) is table


def test_jax_image_resize_is_another_resize():
  """`jax.image.resize(..., 'bicubic')` (Keys A = -0.5, renormalised edges,
  antialiased when shrinking, the plain size ratio) is not DINO's: on a
  table of std 0.02 (max |value| 0.08) it differs by 0.058 at 96 px (14 ->
  6), 0.026 without antialiasing, and 0.013 at 448 px (14 -> 28). With
  DINO's own scale and `scale_and_translate`'s cubic (still A = -0.5) it
  differs by 0.006 - 0.01."""
  table = _table(d=384)
  grid = table[0, 1:].reshape(14, 14, -1)
  for g, low, high in ((6, 0.04, 0.07), (28, 0.008, 0.02)):
    ours = positions.position_table(table, g, g)[0, 1:].reshape(g, g, -1)
    theirs = np.asarray(jax.image.resize(grid, (g, g, 384), "bicubic"))
    assert low < np.abs(ours - theirs).max() < high


def test_dinos_init():
  """dino :161-172: cls token and positions N(0, 0.02^2), Linear kernels
  N(0, 0.02^2) and zero biases, LayerNorms 1 / 0; the patch projection
  torch's Conv2d default U(+-1/sqrt(3 p^2)), weight and bias."""
  d, p = 384, 16
  model = vit.ViT(width=d, depth=1, num_heads=6, position_embedding="learned",
                  weight_init="dino", image_size=64)
  images = jnp.zeros((1, 32, 32, 3))
  params = jax.jit(lambda x: model.init(jax.random.key(0), x,
                                        train=False))(images)["params"]
  assert params["pos_embed"].shape == (1, 1 + 4 * 4, d)  # 64 px, not 32
  for leaf in (params["pos_embed"], params["cls_token"],
               params["block1"]["attn"]["qkv"]["kernel"],
               params["block1"]["attn"]["proj"]["kernel"],
               params["block1"]["mlp"]["fc1"]["kernel"],
               params["block1"]["mlp"]["fc2"]["kernel"]):
    assert np.std(leaf) == pytest.approx(0.02, rel=0.06)
    assert abs(np.mean(leaf)) < 0.003
  bound = 1 / math.sqrt(3 * p * p)
  for leaf in (params["patch_embed"]["kernel"], params["patch_embed"]["bias"]):
    assert np.abs(leaf).max() <= bound
    assert np.std(leaf) == pytest.approx(bound / math.sqrt(3), rel=0.12)
  for path, leaf in traverse_util.flatten_dict(params).items():
    if path[-1] == "bias" and path[0] != "patch_embed":
      np.testing.assert_array_equal(leaf, 0.)
    if path[-1] == "scale":
      np.testing.assert_array_equal(leaf, 1.)


def test_learned_table_trains_and_reads_every_size():
  """The table is a parameter with a gradient, and a 96 px-like crop (a
  smaller grid) adds its resized rows: h at 8 px is the ViT with the
  resized table in place of the learned one."""
  model = vit.TinyViT(position_embedding="learned", weight_init="dino",
                      image_size=16)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                      train=False)["params"]
  images = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  grad = jax.grad(lambda p: model.apply({"params": p}, images,
                                        train=False).sum())(params)
  assert np.abs(grad["pos_embed"]).max() > 0
  small = vit.TinyViT(position_embedding="learned", weight_init="dino",
                      image_size=8)
  resized = {**params, "pos_embed": dino_interpolate(
      np.asarray(params["pos_embed"]), 2, 2).astype(np.float32)}
  np.testing.assert_allclose(
      model.apply({"params": params}, images, train=False),
      small.apply({"params": resized}, images, train=False), atol=1e-5)


def test_config_fields():
  """dino.py:vit_small has DINO's ViT (timm's 21.67 M parameters of
  vit_small_patch16_224 without its classifier, the 197-row table
  included); the fields' bad values are one ConfigError each, and a
  ResNet takes only the defaults."""
  c = config_lib.load("dino:vit_small")
  model = models.encoder_from_config(c, bn_axis_name=None)
  assert (model.position_embedding, model.weight_init, model.image_size) == (
      "learned", "dino", 224)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 96, 96, 3)), train=False))["params"]
  assert shapes["pos_embed"].shape == (1, 197, 384)
  assert sum(x.size for x in jax.tree.leaves(shapes)) == 21_665_664
  moco = models.encoder_from_config(config_lib.load("moco_v3:vit_small"),
                                    bn_axis_name=None)
  assert (moco.position_embedding, moco.weight_init) == ("sincos", "moco_v3")
  for field, value, match in (
      ("vit_position_embedding", "rope", "vit_position_embedding must be"),
      ("vit_init", "timm", "vit_init must be one of"),
      ("image_size", 100, "must be a multiple of patch_size 16")):
    c = config_lib.load("dino:vit_small")
    c[field] = value
    with pytest.raises(ConfigError, match=match):
      models.check_config(c)
  c = config_lib.load("simclr:digits")
  c.vit_init = "dino"
  with pytest.raises(ConfigError, match="vit_init applies to ViTs only"):
    models.check_config(c)
