"""Colour distortion as a batched size-keeping op (see batched_ops.py):
brightness, contrast, saturation and hue in a random order per example, with
our batched hue shift, in the flavour of one of three references (`impl`):

  simclr_v1    SimCLR v1 data_util.py: TF's tf.image.random_brightness (an
               added delta), random_contrast (around each channel's mean),
               random_saturation (S scaled in HSV, clipped to [0, 1]).
  simclr_v2    SimCLR v2 tf2/data_util.py: v1 with brightness multiplied.
  torchvision  MoCo's torchvision ColorJitter (functional_tensor): brightness
               multiplied, contrast blended with the image's mean grey
               level, saturation blended with the grey image.

Hue is the same HSV shift in all three."""

import functools

import tensorflow as tf

from contrastive_jax.data import batched_ops
from contrastive_jax.data import op_args


def _per_example(values):
  """[B] values broadcast against [B, H, W, C] images."""
  return values[:, None, None, None]


def adjust_hue(images, delta):
  """Shifts the HSV hue of each image i by delta[i] (in turns), as
  tf.image.adjust_hue does for one image and one delta (to ~1e-6).

  Value v = max(r, g, b) and chroma c = v - min(r, g, b) are kept; with the
  hue h in [0, 6), channel n of the result is v - c * clip(min(k, 4 - k), 0,
  1), k = (n + h) mod 6, n = 5, 3, 1 for r, g, b (the closed form of HSV to
  RGB). Elementwise, so vectorised over the batch.
  """
  r, g, b = tf.unstack(images, axis=-1)
  v = tf.maximum(tf.maximum(r, g), b)
  c = v - tf.minimum(tf.minimum(r, g), b)
  safe = tf.where(c > 0, c, 1.0)  # Grey pixels: any hue; c = 0 keeps them.
  hue = tf.where(v == r, (g - b) / safe,
                 tf.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
  hue += 6.0 * delta[:, None, None]
  k = hue[..., None] + tf.constant([5.0, 3.0, 1.0])
  k -= 6.0 * tf.floor(k * (1.0 / 6.0))  # mod 6; tf.math.floormod is slower.
  return v[..., None] - c[..., None] * tf.clip_by_value(
      tf.minimum(k, 4.0 - k), 0.0, 1.0)


def _shift_brightness(images, delta):
  """tf.image.adjust_brightness: x + delta (SimCLR v1)."""
  return images + _per_example(delta)


def _scale_brightness(images, factor):
  """SimCLR v2's brightness, and torchvision's (a blend with black)."""
  return images * _per_example(factor)


def _contrast_around_grey(images, factor):
  """torchvision: blend with the mean of the grey image, one scalar."""
  mean = _per_example(tf.reduce_mean(batched_ops.gray(images), axis=[1, 2]))
  return (images - mean) * _per_example(factor) + mean


def _contrast_per_channel(images, factor):
  """tf.image.adjust_contrast: each channel around its own mean."""
  mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
  return (images - mean) * _per_example(factor) + mean


def _saturation_hsv(images, factor):
  """tf.image.adjust_saturation: S -> min(f S, 1) in HSV, hue and value
  kept, in closed form (no round trip through HSV).

  With v = max(r, g, b) and chroma c = v - min(r, g, b), S = c / v and each
  channel is x = v - c t for a t that only the hue sets; so the new chroma is
  c' = min(f c, v) and x' = v - (v - x) c' / c = v - (v - x) min(f, v / c).
  Grey pixels (c = 0) have x = v and stay.
  """
  r, g, b = tf.unstack(images, axis=-1)
  v = tf.maximum(tf.maximum(r, g), b)
  c = v - tf.minimum(tf.minimum(r, g), b)
  headroom = v / tf.where(c > 0, c, 1.0)  # 1 / S: where S reaches 1.
  scale = tf.minimum(factor[:, None, None], headroom)[..., None]
  return v[..., None] - (v[..., None] - images) * scale


def _saturation_blend(images, factor):
  """Blends each pixel with its luma: x -> f x + (1 - f) luma(x), i.e. one
  3x3 colour matrix per image, f I + (1 - f) luma 1^T (a batched matmul;
  broadcasting the luma over channels is much slower in TF on CPU)."""
  factor = factor[:, None, None]
  luma = tf.constant(batched_ops.LUMA)[None, :, None] * tf.ones([1, 1, 3])
  matrix = factor * tf.eye(3)[None] + (1.0 - factor) * luma
  shape = tf.shape(images)
  pixels = tf.reshape(images, [shape[0], -1, 3])
  return tf.reshape(tf.matmul(pixels, matrix), shape)


def _jitter_step(adjust, image, factor):
  """One colour op on one [H, W, C] image, clipped to [0, 1]."""
  return batched_ops.clip(adjust(image[None], factor[None]))[0]


# Per impl (op_args.JITTER_IMPLS: which amounts are deltas), in SimCLR's
# order: the brightness, contrast, saturation and hue adjust functions.
IMPLS = {
    'simclr_v1': (_shift_brightness, _contrast_per_channel, _saturation_hsv,
                  adjust_hue),
    'simclr_v2': (_scale_brightness, _contrast_per_channel, _saturation_hsv,
                  adjust_hue),
    'torchvision': (_scale_brightness, _contrast_around_grey,
                    _saturation_blend, adjust_hue),
}


def color_jitter(strength=1.0, p=0.8, brightness=None, contrast=None,
                 saturation=None, hue=None, random_order=True,
                 impl='torchvision'):
  """Colour distortion, applied as a whole with probability p.

  Unset amounts default to SimCLR's: 0.8 * strength for brightness, contrast
  and saturation, 0.2 * strength for hue (MoCo v1: all 0.4, p=1; MoCo v2:
  0.4/0.4/0.4/0.1, p=0.8). `impl` picks the reference whose ops these are
  (module docstring). Factors are uniform in [max(0, 1 - x), 1 + x] for an
  amount x; deltas (hue, and simclr_v1's brightness) in [-x, x]. SimCLR's
  TF ops raise for contrast or saturation > 1; here the factor stops at 0.
  A zero amount skips its op, so strength 0 is exactly the identity. With
  `random_order` each example applies the ops in its own random order (a
  random permutation, as SimCLR's color_jitter_rand and torchvision's
  randperm), clipping to [0, 1] after each.

  The default impl is 'torchvision' because that is what this op computed
  before impls existed: existing spec strings keep their stream.
  """
  adjusts, lows, highs = op_args.jitter_ops(
      IMPLS, strength=strength, p=p, impl=impl, brightness=brightness,
      contrast=contrast, saturation=saturation, hue=hue)
  if not adjusts or p == 0:
    return batched_ops.IDENTITY
  count = len(adjusts)
  spans = [high - low for low, high in zip(lows, highs)]
  shuffle = random_order and count > 1

  def factors_of(uniforms):
    # Layout: [coin, order keys (if shuffled), one draw per op].
    return tf.constant(lows) + uniforms[..., -count:] * tf.constant(spans)

  def jitter_one(image, row):
    """One example: its ops in its order, or nothing if its coin says so."""
    factors = factors_of(row)
    order = tf.argsort(row[1:1 + count]) if shuffle else None

    def jitter():
      if not shuffle:
        out = image
        for i, adjust in enumerate(adjusts):
          out = _jitter_step(adjust, out, factors[i])
        return out

      # A loop over the positions with one switch in its body: XLA compiles
      # each op once, not once per position (4x less code to compile).
      def position_step(position, out):
        steps = [functools.partial(_jitter_step, adjust, out, factors[i])
                 for i, adjust in enumerate(adjusts)]
        return position + 1, tf.switch_case(order[position], steps)
      return tf.while_loop(lambda position, _: position < count,
                           position_step, (tf.constant(0), image))[1]
    if p == 1:
      return jitter()
    return tf.cond(row[0] < p, jitter, lambda: image)

  def jitter_partitioned(images, uniforms):
    """Unknown image sizes: the batch partitioned by op at each position
    (each op, the costly hue above all, runs once per example)."""
    factors = factors_of(uniforms)
    if shuffle:
      order = tf.argsort(uniforms[:, 1:1 + count], axis=1)
    else:
      order = tf.tile(tf.range(count)[None], [tf.shape(images)[0], 1])
    skip = uniforms[:, 0] >= p
    rows = tf.range(tf.shape(images)[0])
    for position in range(count):
      # Index `count`: jitter skipped.
      which = tf.where(skip, count, tf.cast(order[:, position], tf.int32))
      parts = tf.dynamic_partition(images, which, count + 1)
      part_factors = tf.dynamic_partition(factors, which, count + 1)
      outs = [batched_ops.clip(adjust(part, part_factor[:, i]))
              for i, (adjust, part, part_factor) in enumerate(
                  zip(adjusts, parts, part_factors))]
      images = tf.ensure_shape(
          tf.dynamic_stitch(tf.dynamic_partition(rows, which, count + 1),
                            outs + [parts[count]]), images.shape)
    return images

  return batched_ops.per_example_op(1 + (count if shuffle else 0) + count,
                                    jitter_one, fallback=jitter_partitioned)
