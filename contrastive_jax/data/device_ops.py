"""The size-keeping augmentations as JAX ops, run inside the train step.

With `augment_on_device` the host pipeline stops after each view's
`augment.View.prepare` (decode, the crops, ONE draw of the view's
uniforms) and the ops after the last size-setting one (flip, colour jitter,
grayscale, blur, solarize) run here, on the accelerator, on the per-device
batch. Each op reads its uniforms in exactly the layout of its host twin
(batched_ops.py, color_jitter.py), so for the same uniforms a view comes out
the same as on the host, to float rounding: which examples flip, jitter,
blur, and in which order they jitter, is decided by the same numbers.

Row i of every output depends only on image i and uniforms row i: the ops
are elementwise, per-example sums in a fixed pairwise order (`_fold_sum`),
or (the blur) sums of shifted slices with that example's own taps, never a
reduction or convolution whose grouping XLA may pick by batch shape. In one
compiled program a row is the same bits whatever else is in the batch (and
on CPU for any batch size). Programs compiled for another device count
agree to float rounding (~1e-7): XLA contracts a * b + c into an FMA where
both land in one fused kernel, and the program partitioned for N > 1
devices fuses a little differently from the 1-device one. On a target
without FMA they give the same bits (tests/test_device_ops.py). Coin ops compute every example and keep the changed ones with
`jnp.where`: on an accelerator that costs less than gathering them.

Each factory takes its host twin's arguments, checks them with the same
code (op_args) and returns a `DeviceOp`; device_augment.py builds views from
spec strings. Pure jax.numpy: the GPU machines have no TensorFlow, so
nothing imported here (op_args) may import it either.
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

from contrastive_jax.data import op_args

# ITU-R 601 luma, as batched_ops.LUMA (not imported: that module is TF).
LUMA = (0.2989, 0.5870, 0.1140)


class DeviceOp:
  """A size-keeping op: `apply(images, uniforms)` on float32 [B, H, W, C]
  and [B, num_uniforms], as its host `batched_ops.BatchedOp`."""

  def __init__(self, num_uniforms, apply):
    self.num_uniforms = num_uniforms
    self.apply = apply


IDENTITY = DeviceOp(0, lambda images, uniforms: images)


def _per_example(values):
  """[B] values broadcast against [B, H, W, C] images."""
  return values[:, None, None, None]


def _clip(images):
  return jnp.clip(images, 0.0, 1.0)


def gray(images):
  """[B, H, W] luma, with the host's weights and order of additions."""
  r, g, b = images[..., 0], images[..., 1], images[..., 2]
  return r * LUMA[0] + g * LUMA[1] + b * LUMA[2]


def _coin(p, draws, change):
  """`change(images, other uniforms)` where the coin (column 0) is < p, as
  batched_ops._coin: p = 0 is the identity with no uniforms, p = 1 changes
  every example (its coin column is still drawn, and ignored)."""
  if p == 0:
    return IDENTITY

  def apply(images, uniforms):
    changed = change(images, uniforms[:, 1:])
    if p == 1:
      return changed
    return jnp.where(_per_example(uniforms[:, 0] < p), changed, images)
  return DeviceOp(1 + draws, apply)


# --- Flip, grayscale, solarize -----------------------------------------------

def flip_lr(p=0.5):
  """Mirrors the image left-right with probability p."""
  op_args.check_probability('flip_lr', p)
  return _coin(p, 0, lambda images, _: jnp.flip(images, axis=2))


def grayscale(p=0.2):
  """Replaces the image by its luma in all 3 channels, with probability p."""
  op_args.check_probability('grayscale', p)
  return _coin(p, 0, lambda images, _: jnp.repeat(gray(images)[..., None], 3,
                                                  axis=-1))


def solarize(p=0.0, threshold=0.5):
  """Inverts pixels >= threshold (x -> 1 - x), with probability p (BYOL)."""
  op_args.check_solarize(p, threshold)
  return _coin(p, 0, lambda images, _: jnp.where(images >= threshold,
                                                 1.0 - images, images))


# --- Blur --------------------------------------------------------------------

def blur_radius(height, width, kernel_fraction):
  """The host's radius for an image of this size: 0 where its static check
  (in float64) says the kernel is [1], else int(side * kernel_fraction) // 2
  with the product in float32, as its traced computation."""
  if int(min(height, width) * kernel_fraction) < 2:
    return 0
  product = np.float32(min(height, width)) * np.float32(kernel_fraction)
  return int(np.floor(product)) // 2


def _separable_blur(images, stds, radius, padding='reflect'):
  """Blurs each image with its own std: reflect padding, then a vertical and
  a horizontal pass, each a sum of 2r + 1 shifted slices with per-example
  taps (a convolution's grouping could depend on the batch shape)."""
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-jnp.square(x)[None] / (2.0 * jnp.square(stds)[:, None]))
  # An explicit sum of the taps: a fixed order, whatever XLA does with a
  # reduction of this batch's shape.
  total = kernel[:, 0]
  for k in range(1, 2 * radius + 1):
    total = total + kernel[:, k]
  taps = kernel / total[:, None]
  height, width = images.shape[1:3]
  padded = jnp.pad(images, [(0, 0), (radius, radius), (radius, radius),
                            (0, 0)],
                   mode={'reflect': 'reflect', 'zeros': 'constant'}[padding])
  rows = sum(_per_example(taps[:, k]) * padded[:, k:k + height]
             for k in range(2 * radius + 1))
  out = sum(_per_example(taps[:, k]) * rows[:, :, k:k + width]
            for k in range(2 * radius + 1))
  return _clip(out)


def gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1,
                  kernel_size=None, padding='reflect'):
  """Gaussian blur with sigma uniform in `sigma`, with probability p; the
  radius as the host's (`blur_radius`, or `kernel_size` // 2): identity
  below radius 1; `padding` as the host's. Uniforms: [coin, sigma]."""
  low, high = op_args.check_blur(p, sigma, kernel_fraction, kernel_size,
                                 padding)
  if p == 0:
    return IDENTITY

  def apply(images, uniforms):
    radius = (kernel_size // 2 if kernel_size is not None else
              blur_radius(images.shape[1], images.shape[2], kernel_fraction))
    if radius < 1:
      return images  # The host's identity: not even clipped.
    stds = low + uniforms[:, 1] * (high - low)
    blurred = _separable_blur(images, stds, radius, padding)
    return jnp.where(_per_example(uniforms[:, 0] < p), blurred, images)
  return DeviceOp(2, apply)


# --- Colour jitter (color_jitter.py's ops, same formulas) --------------------

def adjust_hue(images, delta):
  """color_jitter.adjust_hue: the HSV hue shifted by delta[i] turns."""
  r, g, b = images[..., 0], images[..., 1], images[..., 2]
  v = jnp.maximum(jnp.maximum(r, g), b)
  c = v - jnp.minimum(jnp.minimum(r, g), b)
  safe = jnp.where(c > 0, c, 1.0)
  hue = jnp.where(v == r, (g - b) / safe,
                  jnp.where(v == g, (b - r) / safe + 2.0,
                            (r - g) / safe + 4.0))
  hue = hue + 6.0 * delta[:, None, None]
  k = hue[..., None] + jnp.array([5.0, 3.0, 1.0], jnp.float32)
  k = k - 6.0 * jnp.floor(k * (1.0 / 6.0))
  return v[..., None] - c[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k),
                                                0.0, 1.0)


def _shift_brightness(images, delta):
  return images + _per_example(delta)


def _scale_brightness(images, factor):
  return images * _per_example(factor)


def _fold_sum(x, axis):
  """Sum over `axis` (kept, length 1) by halving: zero-padded to a power
  of two, then the two halves added until one is left. Only elementwise
  adds in a fixed pairwise order: XLA's reductions may group an example's
  pixels differently for another batch size (XLA:CPU's do)."""
  n = x.shape[axis]
  size = 1 << max(n - 1, 0).bit_length()
  if size != n:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - n)
    x = jnp.pad(x, pad)
  while x.shape[axis] > 1:
    half = x.shape[axis] // 2
    x = (lax.slice_in_dim(x, 0, half, axis=axis) +
         lax.slice_in_dim(x, half, 2 * half, axis=axis))
  return x


def _pixel_mean(x):
  """The mean over axes 1 and 2 (height, width), kept, per example."""
  return _fold_sum(_fold_sum(x, 1), 2) / (x.shape[1] * x.shape[2])


def _contrast_around_grey(images, factor):
  mean = _pixel_mean(gray(images)[..., None])
  return (images - mean) * _per_example(factor) + mean


def _contrast_per_channel(images, factor):
  mean = _pixel_mean(images)
  return (images - mean) * _per_example(factor) + mean


def _saturation_hsv(images, factor):
  """color_jitter._saturation_hsv: S -> min(f S, 1), hue and value kept."""
  r, g, b = images[..., 0], images[..., 1], images[..., 2]
  v = jnp.maximum(jnp.maximum(r, g), b)
  c = v - jnp.minimum(jnp.minimum(r, g), b)
  headroom = v / jnp.where(c > 0, c, 1.0)
  scale = jnp.minimum(factor[:, None, None], headroom)[..., None]
  return v[..., None] - (v[..., None] - images) * scale


def _saturation_blend(images, factor):
  """color_jitter._saturation_blend's colour matrix M = f I + (1 - f) luma
  1^T, applied as out_j = sum_k x_k M[k, j] elementwise (a batched 3x3
  matmul could be tiled by batch size)."""
  f = _per_example(factor)[..., 0]  # [B, 1, 1]
  x = [images[..., k] for k in range(3)]
  m = [[(1.0 - f) * LUMA[k] + (f if k == j else 0.0) for j in range(3)]
       for k in range(3)]
  return jnp.stack([x[0] * m[0][j] + x[1] * m[1][j] + x[2] * m[2][j]
                    for j in range(3)], axis=-1)


# Per impl, as color_jitter.IMPLS: the brightness, contrast, saturation and
# hue adjust functions.
IMPLS = {
    'simclr_v1': (_shift_brightness, _contrast_per_channel, _saturation_hsv,
                  adjust_hue),
    'simclr_v2': (_scale_brightness, _contrast_per_channel, _saturation_hsv,
                  adjust_hue),
    'torchvision': (_scale_brightness, _contrast_around_grey,
                    _saturation_blend, adjust_hue),
}


def _jitter_in_order(adjusts, images, factors, order):
  """Each example's ops in its own order ([B, count] op indices), clipped
  after each. A loop over the positions, as the host's: each position's
  result is materialised (fused, the next position's candidates would each
  recompute it) and XLA compiles the ops once, not once per position."""

  def position_step(position, out):
    which = _per_example(lax.dynamic_index_in_dim(order, position, axis=1,
                                                  keepdims=False))
    kept = out
    for i, adjust in enumerate(adjusts):
      kept = jnp.where(which == i, _clip(adjust(out, factors[:, i])), kept)
    return kept
  return lax.fori_loop(0, len(adjusts), position_step, images)


def color_jitter(strength=1.0, p=0.8, brightness=None, contrast=None,
                 saturation=None, hue=None, random_order=True,
                 impl='torchvision'):
  """color_jitter.color_jitter on device: the same checks, amounts and
  uniforms ([coin, order keys if shuffled, one draw per op]). The order is
  per example, so each position computes every op and keeps the one the
  example's order names there: 16 op evaluations instead of 4, all
  elementwise or per-example means (cheap beside the network)."""
  adjusts, lows, highs = op_args.jitter_ops(
      IMPLS, strength=strength, p=p, impl=impl, brightness=brightness,
      contrast=contrast, saturation=saturation, hue=hue)
  if not adjusts or p == 0:
    return IDENTITY
  count = len(adjusts)
  # Spans in float64, then both in float32: the host's tf.constants.
  spans = np.asarray([high - low for low, high in zip(lows, highs)],
                     np.float32)
  lows = np.asarray(lows, np.float32)
  shuffle = random_order and count > 1

  def apply(images, uniforms):
    factors = lows + uniforms[:, -count:] * spans
    if shuffle:
      out = _jitter_in_order(adjusts, images, factors,
                             jnp.argsort(uniforms[:, 1:1 + count], axis=1))
    else:
      out = images
      for i, adjust in enumerate(adjusts):
        out = _clip(adjust(out, factors[:, i]))
    if p == 1:
      return out
    return jnp.where(_per_example(uniforms[:, 0] < p), out, images)

  return DeviceOp(1 + (count if shuffle else 0) + count, apply)
