"""Vision Transformer encoders (MoCo v3's and DINO's) that return the
representation `h`.

Reference: facebookresearch/moco-v3 vits.py @c349e6e, which builds on timm's
`VisionTransformer` (timm 0.4.9, moco-v3 README.md:90): pre-LN blocks
x + attn(LN(x)), x + mlp(LN(x)); an MLP of ratio 4 with exact GELU; qkv with
a bias; LayerNorm eps 1e-6 (vits.py:118, :125); a final LayerNorm, and the
representation `h` is the final-normed cls token (timm's `forward_features`;
MoCo v3 replaces the classifier `head` with its projector). No dropout and
no drop-path (timm's defaults, which MoCo v3 keeps).

Stochastic depth (`drop_path_rate`, off by default) is DINO's and timm's
(facebookresearch/dino vision_transformer.py:27-46, :150 @7c446df).

Naming is part of the contract and follows timm's, so that an export can map
it: `patch_embed` (the patch projection; a frozen mask selects
`params['encoder']['patch_embed']`, MoCo v3's `stop_grad_conv1`,
vits.py:49-51), the leaf `cls_token`, `block{i}` (1-based) with `norm1`,
`attn/{qkv,proj}`, `norm2`, `mlp/{fc1,fc2}`, and the final `norm`. Every
LayerNorm's name has a `norm` token, so
`contrastive_jax.weight_decay.decay_mask` excludes its scale and bias by
path, and it excludes the leaf `cls_token` by name (timm's `no_weight_decay()`; MoCo v3 itself trains ViTs with AdamW on
every parameter, main_moco.py:228-230, i.e. `weight_decay_mask='all'`).
The position table is a constant (vits.py:69 `requires_grad = False`), not
a parameter: nothing to decay, train or checkpoint.

DINO's ViT (facebookresearch/dino vision_transformer.py @7c446df; "dino"
below) is timm's too, with two differences, both config data
(`position_embedding`, `weight_init`; MoCo v3's are the defaults):
- 'learned' positions: a parameter `pos_embed` [1, 1 + G*G, D], the cls
  token's row first, for the G x G grid of `image_size` (dino :142-147:
  img_size 224, 14 x 14 at patch 16); a crop of another size adds the
  table resized to its grid (`position_table`, dino :174-194).
- DINO's init (dino :161-172): `cls_token` and `pos_embed` N(0, 0.02^2),
  every Linear N(0, 0.02^2) with zero bias, LayerNorms 1 and 0; the patch
  projection keeps torch's Conv2d default (`self.apply(_init_weights)`
  touches Linears and LayerNorms only): U(+-1/sqrt(fan_in)) for weight and
  bias. DINO's `trunc_normal_(std=.02)` truncates at +-2 in absolute value
  (dino utils.py:548), 100 std: a plain normal in effect (as
  models/heads.py's DINOHead).
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax.models import input_norm
from contrastive_jax.models.positions import position_table

PATCH_SIZES = (8, 16)
LAYER_NORM_EPSILON = 1e-6  # vits.py:118, :125
# `ViT.position_embedding`: MoCo v3's fixed 2-D sin-cos table, or DINO's
# learned one. `ViT.weight_init`: MoCo v3's init (vits.py:34-45), or DINO's.
POSITION_EMBEDDINGS = ('sincos', 'learned')
INITS = ('moco_v3', 'dino')
# DINO's `trunc_normal_(std=.02)` (see the module docstring).
_DINO_NORMAL = nn.initializers.normal(0.02)


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int,
                              temperature: float = 10000.) -> np.ndarray:
  """The fixed 2-D sin-cos table, [1 + grid_h * grid_w, dim] float32.

  vits.py:53-68 `build_2d_sincos_position_embedding`: with omega_k =
  temperature**(-k / (dim/4)), k < dim/4, the row of the patch at (r, c)
  (row-major, as timm's `PatchEmbed` flattens) is [sin(r omega), cos(r
  omega), sin(c omega), cos(c omega)], and the cls token gets a zero row
  (vits.py:67-68). vits.py names the first coordinate `w`, but its
  `torch.meshgrid(grid_w, grid_h)` ('ij' indexing) makes it the outer,
  i.e. row, index of the flattened grid, so on the square grids it is used
  on this is its table exactly; on a non-square grid vits.py's order would
  not match the tokens', and this keeps (row, column).
  Computed in float64 and rounded once to float32 (vits.py: float32 all
  along; the two differ by float32 rounding).
  """
  if dim % 4:
    raise ValueError(
        f'the 2-D sin-cos position embedding needs a width divisible by 4; '
        f'got {dim}')  # vits.py:58
  omega = 1. / temperature ** (np.arange(dim // 4, dtype=np.float64)
                               / (dim // 4))
  rows, cols = np.meshgrid(np.arange(grid_h, dtype=np.float64),
                           np.arange(grid_w, dtype=np.float64), indexing='ij')
  out_r = rows.reshape(-1, 1) * omega
  out_c = cols.reshape(-1, 1) * omega
  table = np.concatenate([np.sin(out_r), np.cos(out_r),
                          np.sin(out_c), np.cos(out_c)], axis=1)
  cls_row = np.zeros((1, dim))
  return np.concatenate([cls_row, table]).astype(np.float32)


def _uniform(bound: float):
  """U(-bound, bound), as `torch.nn.init.uniform_(w, -bound, bound)`."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def patch_embed_bound(patch_size: int, width: int) -> float:
  """vits.py:45: xavier-uniform bound of the patch projection taken as a
  [3 * patch * patch -> width] linear map, sqrt(6 / (3 p^2 + width)) (torch's
  own conv fan-out would count the patch area again)."""
  return math.sqrt(6. / (3 * patch_size * patch_size + width))


def qkv_kernel_init(key, shape, dtype=jnp.float32):
  """vits.py:34-37: q, k and v each xavier-uniform on their own, i.e.
  U(+-sqrt(6 / (out/3 + in))) over the fused [in, 3 * dim] kernel."""
  fan_in, fan_out = shape
  bound = math.sqrt(6. / (fan_out // 3 + fan_in))
  return _uniform(bound)(key, shape, dtype)


# vits.py:38-40: every other Linear xavier-uniform (flax's fan_avg uniform of
# scale 1 is torch's bound sqrt(6 / (in + out))), every bias zero.
dense = functools.partial(
    nn.Dense, kernel_init=nn.initializers.xavier_uniform(),
    bias_init=nn.initializers.zeros)


def linear_kernel_init(init: str, *, fused_qkv: bool = False):
  """A Linear's kernel init: MoCo v3's (xavier-uniform; `qkv_kernel_init`
  for the fused qkv) or DINO's N(0, 0.02^2) (dino :165-169)."""
  if init == 'dino':
    return _DINO_NORMAL
  return qkv_kernel_init if fused_qkv else nn.initializers.xavier_uniform()


def torch_conv_init(key, shape, dtype=jnp.float32):
  """torch's Conv2d default for a flax kernel [kh, kw, in, out] (or its
  bias [out], given the kernel's fan-in by `torch_conv_bias_init`):
  kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in))."""
  fan_in = shape[0] * shape[1] * shape[2]
  return _uniform(1. / math.sqrt(fan_in))(key, shape, dtype)


def torch_conv_bias_init(fan_in: int):
  return _uniform(1. / math.sqrt(fan_in))
# timm's LayerNorm: weight 1, bias 0 (flax's defaults); the two-pass
# variance as torch, not flax's E[x^2] - E[x]^2.
layer_norm = functools.partial(
    nn.LayerNorm, epsilon=LAYER_NORM_EPSILON, use_fast_variance=False)


class Attention(nn.Module):
  """timm's `Attention`: a fused `qkv` Dense (with bias), softmax(q k^T /
  sqrt(head_dim)) v per head, and the output Dense `proj`. Logits and
  softmax are float32 whatever `dtype` (`jax.nn.dot_product_attention`)."""
  num_heads: int
  dtype: Any = jnp.float32
  weight_init: str = 'moco_v3'

  @nn.compact
  def __call__(self, x):
    batch, tokens, width = x.shape
    head_dim = width // self.num_heads
    qkv = dense(3 * width,
                kernel_init=linear_kernel_init(self.weight_init, fused_qkv=True),
                dtype=self.dtype, name='qkv')(x)
    # timm's layout of the fused output: [3, heads, head_dim].
    qkv = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    y = jax.nn.dot_product_attention(q, k, v).reshape(batch, tokens, width)
    return dense(width, kernel_init=linear_kernel_init(self.weight_init),
                 dtype=self.dtype, name='proj')(y)


@jax.custom_jvp
def gelu(x):
  """Exact (erf) GELU, x Phi(x), as torch's `nn.GELU()`: `jax.nn.gelu(x,
  approximate=False)`'s values, with its derivative Phi(x) + x phi(x)
  written out. jax >= 0.11 cannot differentiate erf inside `shard_map`
  (its derivative's polynomial mixes the batch's varying axis with
  constants: 'Primitive polynomial requires varying manual axes to
  match'); the explicit rule uses only exp and erfc's value."""
  return jax.nn.gelu(x, approximate=False)


@gelu.defjvp
def _gelu_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  # erfc: no cancellation in the left tail, where Phi(x) is tiny.
  cdf = 0.5 * jax.lax.erfc(x * np.asarray(-1 / math.sqrt(2), x.dtype))
  pdf = jnp.exp(-0.5 * x * x) * np.asarray(1 / math.sqrt(2 * math.pi),
                                            x.dtype)
  return gelu(x), (cdf + x * pdf) * dx


class Mlp(nn.Module):
  """timm's `Mlp`: `fc1` to `hidden` wide, exact (erf) GELU as torch's
  `nn.GELU()` (`gelu`), `fc2` back."""
  hidden: int
  dtype: Any = jnp.float32
  weight_init: str = 'moco_v3'

  @nn.compact
  def __call__(self, x):
    kernel_init = linear_kernel_init(self.weight_init)
    y = dense(self.hidden, kernel_init=kernel_init, dtype=self.dtype,
              name='fc1')(x)
    y = gelu(y)
    return dense(x.shape[-1], kernel_init=kernel_init, dtype=self.dtype,
                 name='fc2')(y)


def drop_path(x, rate: float, rng: jax.Array):
  """Stochastic depth (timm's and DINO's `drop_path`, facebookresearch/dino
  vision_transformer.py:27-35 @7c446df): each example's residual branch
  `x` [B, ...] is dropped with probability `rate`, the kept ones scaled by
  1 / keep_prob, so its expectation is `x`. One draw per example, shared by
  its tokens."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class Block(nn.Module):
  """timm's pre-LN `Block`: x + attn(norm1(x)), then x + mlp(norm2(x)); in
  training, with `drop_path` > 0, each branch goes through `drop_path` (its
  own draw, vision_transformer.py:111-112), from the 'drop_path' rng."""
  num_heads: int
  mlp_ratio: int = 4
  dtype: Any = jnp.float32
  drop_path: float = 0.0
  weight_init: str = 'moco_v3'

  @nn.compact
  def __call__(self, x, train: bool = False):
    def branch(y):
      if not train or self.drop_path == 0.0:
        return y
      return drop_path(y, self.drop_path, self.make_rng('drop_path'))

    y = layer_norm(dtype=self.dtype, name='norm1')(x)
    x = x + branch(Attention(self.num_heads, dtype=self.dtype,
                             weight_init=self.weight_init, name='attn')(y))
    y = layer_norm(dtype=self.dtype, name='norm2')(x)
    return x + branch(Mlp(self.mlp_ratio * x.shape[-1], dtype=self.dtype,
                          weight_init=self.weight_init, name='mlp')(y))


class ViT(nn.Module):
  """ViT trunk: patch projection, cls token + positions (fixed sin-cos or
  learned), `depth` pre-LN blocks, the final LayerNorm of the cls token.

  Called as the ResNets are (`models.create_encoder`): `(images, train)`,
  images NHWC in [0, 1] whose sides are multiples of `patch_size`; returns
  h [B, width] float32. `train` changes nothing (no BatchNorm, no dropout)
  unless `drop_path_rate` > 0.

  Attributes:
    width: embedding width D (timm's `embed_dim`), the size of h.
    depth: number of blocks.
    num_heads: attention heads; must divide `width`.
    mlp_ratio: MLP hidden width / D (vits.py: 4).
    patch_size: side of the square patches (kernel = stride).
    dtype: computation dtype; parameters stay float32, attention logits and
      softmax are float32, and the final LayerNorm - on the cls token only,
      all that is read of it - runs in float32, so h is float32.
    input_norm: a key of `input_norm.INPUT_NORMS`, applied to the images
      first.
    drop_path_rate: stochastic depth in training (DINO's `--drop_path_rate`,
      main_dino.py:105): block i of `depth` (0-based) drops its branches
      with rate i / (depth - 1) of it, timm's linear rule
      (vision_transformer.py:150); needs a 'drop_path' rng in `apply`. 0
      (the default, MoCo v3's): no rng, the same function as before.
    position_embedding: 'sincos' (MoCo v3's fixed table, computed for each
      input's grid) or 'learned' (DINO's `pos_embed` parameter for the grid
      of `image_size`, resized to other grids by `position_table`).
    weight_init: 'moco_v3' or 'dino' (see the module docstring).
    image_size: the side of the images the learned table is for (DINO's
      img_size 224, dino :136, :142-147); unused with 'sincos'.
  """
  width: int
  depth: int
  num_heads: int
  mlp_ratio: int = 4
  patch_size: int = 16
  dtype: Any = jnp.float32
  input_norm: str = 'none'
  drop_path_rate: float = 0.0
  position_embedding: str = 'sincos'
  weight_init: str = 'moco_v3'
  image_size: int = 224

  @property
  def feature_dim(self) -> int:
    """Size of the representation `h` returned by `__call__`."""
    return self.width

  @nn.compact
  def __call__(self, x, train: bool):
    if self.width % self.num_heads:
      raise ValueError(f'{self.num_heads} heads do not divide width '
                       f'{self.width}')
    _, height, width_px, _ = x.shape
    p = self.patch_size
    if height % p or width_px % p:
      raise ValueError(f'image sides {height}x{width_px} must be multiples '
                       f'of patch_size {p}')
    if self.position_embedding not in POSITION_EMBEDDINGS:
      raise ValueError(f'position_embedding must be one of '
                       f'{POSITION_EMBEDDINGS}; got '
                       f'{self.position_embedding!r}')
    if self.weight_init not in INITS:
      raise ValueError(f'weight_init must be one of {INITS}; got '
                       f'{self.weight_init!r}')
    dino = self.weight_init == 'dino'
    x = input_norm.normalize(x, self.input_norm)
    if dino:
      fan_in = p * p * x.shape[-1]
      kernel_init, bias_init = torch_conv_init, torch_conv_bias_init(fan_in)
    else:
      kernel_init = _uniform(patch_embed_bound(p, self.width))
      bias_init = nn.initializers.zeros
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID',
                kernel_init=kernel_init, bias_init=bias_init,
                dtype=self.dtype, name='patch_embed')(x)
    batch, grid_h, grid_w, _ = x.shape
    x = x.reshape(batch, grid_h * grid_w, self.width)

    cls_token = self.param(
        'cls_token', _DINO_NORMAL if dino else nn.initializers.normal(1e-6),
        (1, 1, self.width))  # dino :162; vits.py:41
    cls_token = jnp.broadcast_to(cls_token.astype(x.dtype),
                                 (batch, 1, self.width))
    x = jnp.concatenate([cls_token, x], axis=1)
    if self.position_embedding == 'learned':
      g = self.image_size // p
      table = self.param('pos_embed', _DINO_NORMAL,
                         (1, 1 + g * g, self.width))  # dino :147, :161
      pos_embed = position_table(table, grid_h, grid_w)
    else:
      pos_embed = sincos_position_embedding(grid_h, grid_w, self.width)
    x = x + jnp.asarray(pos_embed, x.dtype)

    for i in range(self.depth):
      rate = self.drop_path_rate * i / max(self.depth - 1, 1)
      x = Block(self.num_heads, self.mlp_ratio, dtype=self.dtype,
                drop_path=rate, weight_init=self.weight_init,
                name=f'block{i + 1}')(x, train=train)
    return layer_norm(dtype=jnp.float32, name='norm')(x[:, 0])


# timm's ViT-Ti (deit_tiny's sizes), MoCo v3's ViT-S (12 heads, vits.py:115-
# 119; timm's own ViT-S has 6) and ViT-B (vits.py:122-126).
ViTTiny = functools.partial(ViT, width=192, depth=12, num_heads=3)
ViTSmall = functools.partial(ViT, width=384, depth=12, num_heads=12)
ViTBase = functools.partial(ViT, width=768, depth=12, num_heads=12)
# For tests only: cheap enough for XLA:CPU at 8-16px.
TinyViT = functools.partial(ViT, width=32, depth=2, num_heads=4, patch_size=4)
