"""Augmentation ops for contrastive views, composed by a spec string.

Every op is built by a factory from its parameters and returns
`fn(image, seed) -> image`, where `image` is ONE float32 HxWx3 image in [0, 1]
and `seed` an int tensor of shape [2]. Ops draw randomness only from stateless
TF ops, so the output is a pure function of (image, seed): the same in eager
mode and inside tf.data, and independent of the global TF random state.

A config names a view as a spec, big_vision style:

  'random_resized_crop(32, area=(0.25, 1.0))|flip_lr|color_jitter(0.5, p=0.8)'

Ops are separated by '|'; each is `name` or `name(args)` with Python literal
arguments (read with `ast.literal_eval`, never `eval`). `build_view` returns a
`View`. Ops that set the image size (the crops and resize) run per example;
the ops after the last of them keep the size and also run on whole batches
(batched_ops.py), with all their randomness drawn per example in one op. The
view of an image is the same function of (image, seed) either way.
"""

import math

import tensorflow as tf

from contrastive_jax.data import batched_ops
from contrastive_jax.data import color_jitter as color_jitter_lib
from contrastive_jax.data import op_args
from contrastive_jax.data import op_table
from contrastive_jax.data import view_spec


# --- Helpers -----------------------------------------------------------------

def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _resize(image, height, width, method, antialias=False):
  # Bicubic and lanczos overshoot at edges; keep the [0, 1] contract.
  return tf.clip_by_value(
      tf.image.resize(image, (height, width), method=method,
                      antialias=antialias), 0.0, 1.0)


# --- Geometric ops -----------------------------------------------------------

CROP_IMPLS = op_args.CROP_IMPLS


def torchvision_crop_box(height, width, seed, area, aspect, max_attempts=10):
  """(top, left, crop height, crop width), int32 scalars, as torchvision's
  RandomResizedCrop.get_params for an image of `height` x `width`.

  Each attempt draws the area fraction uniformly in `area` and the aspect
  ratio w/h log-uniformly in `aspect`; w = round(sqrt(A r)), h = round(sqrt(A
  / r)) (round half to even, as Python's round); the first attempt with 0 < w
  <= width and 0 < h <= height wins and its offsets are uniform integers.
  With none, the fallback is a centre crop: the whole image, narrowed to the
  nearest allowed aspect ratio if the image's own lies outside `aspect`.
  All attempts are drawn at once (iid, so the first valid one has the same
  law as torchvision's loop), in float64 like Python's arithmetic.
  """
  seeds = _split(seed, 2)
  draws = tf.random.stateless_uniform([max_attempts, 2], seeds[0],
                                      dtype=tf.float64)
  h_f, w_f = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  target = h_f * w_f * (area[0] + draws[:, 0] * (area[1] - area[0]))
  log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
  ratio = tf.exp(log_low + draws[:, 1] * (log_high - log_low))
  crop_w = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
  crop_h = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
  valid = ((crop_w > 0) & (crop_w <= width) & (crop_h > 0) &
           (crop_h <= height))
  first = tf.argmax(tf.cast(valid, tf.int32))  # 0 when none is valid.
  found = tf.reduce_any(valid)
  in_ratio = w_f / h_f
  fallback_h = tf.where(in_ratio < aspect[0],
                        tf.cast(tf.round(w_f / aspect[0]), tf.int32), height)
  fallback_w = tf.where(in_ratio > aspect[1],
                        tf.cast(tf.round(h_f * aspect[1]), tf.int32), width)
  crop_h = tf.where(found, crop_h[first], fallback_h)
  crop_w = tf.where(found, crop_w[first], fallback_w)
  # Uniform offsets in [0, side - crop] (torch.randint's closed range).
  offsets = tf.random.stateless_uniform([2], seeds[1], dtype=tf.float64)
  top = tf.where(found, tf.cast(tf.floor(
      offsets[0] * tf.cast(height - crop_h + 1, tf.float64)), tf.int32),
                 (height - crop_h) // 2)
  left = tf.where(found, tf.cast(tf.floor(
      offsets[1] * tf.cast(width - crop_w + 1, tf.float64)), tf.int32),
                  (width - crop_w) // 2)
  return top, left, crop_h, crop_w


def crop_box(shape, seed, *, impl, area, aspect, min_object_covered,
             max_attempts):
  """(begin, size) for tf.slice of an image of `shape` ([3] int32): the
  random crop of `random_resized_crop`, arguments already checked."""
  if impl == 'tf':
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=whole_image, seed=seed,
        # The box is the whole image: a lower bound on the crop's area.
        min_object_covered=min_object_covered, aspect_ratio_range=aspect,
        area_range=area, max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True)
    return begin, size
  top, left, crop_h, crop_w = torchvision_crop_box(
      shape[0], shape[1], seed, area, aspect, max_attempts)
  return tf.stack([top, left, 0]), tf.stack([crop_h, crop_w, -1])


def random_resized_crop(size, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3),
                        method='bicubic', impl='tf', min_object_covered=0.0,
                        max_attempts=10, antialias=False):
  """Inception-style crop of a fraction `area` of the image with width/height
  ratio in `aspect`, then resized to `size`.

  impl='tf': TF's tf.image.sample_distorted_bounding_box, SimCLR's sampler:
  the aspect ratio uniform, then the crop HEIGHT uniform among the integer
  heights whose area fits; the crop must also cover `min_object_covered` of
  the image; after `max_attempts` failures, the whole image. SimCLR's
  reference passes min_object_covered=0.1 and max_attempts=100 (the defaults
  here, 0 and 10, keep the stream that specs had before these arguments).

  impl='torchvision': torchvision's RandomResizedCrop (MoCo): the AREA
  uniform and the aspect ratio log-uniform, 10 attempts (`max_attempts`),
  then a centre crop (`torchvision_crop_box`). Larger crops on average: mean
  area 0.54 vs TF's 0.50 on 256x256 with area (0.2, 1). torchvision resizes
  PIL images with antialiased bilinear: method='bilinear', antialias=True.
  """
  height, width, area, aspect = op_args.check_random_resized_crop(
      size, area, aspect, method, impl, min_object_covered, max_attempts,
      antialias)
  box = dict(impl=impl, area=area, aspect=aspect,
             min_object_covered=float(min_object_covered),
             max_attempts=max_attempts)

  def op(image, seed):
    begin, crop_size = crop_box(tf.shape(image), seed, **box)
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, image.shape[-1]])
    return _resize(crop, height, width, method, antialias)
  return op


def resize(size, method='bicubic'):
  """Deterministic resize to `size` (aspect ratio not kept)."""
  height, width = op_args.check_resize(size, method)
  return lambda image, seed: _resize(image, height, width, method)


def center_crop(size, crop_fraction=0.875, method='bicubic', antialias=False):
  """Crops the central square of side `crop_fraction` * the shorter side, then
  resizes to `size`: the usual eval view (0.875 = 224/256). torchvision's
  Resize(256) + CenterCrop(224) on PIL images (MoCo) is crop_fraction=0.875,
  method='bilinear', antialias=True."""
  height, width = op_args.check_center_crop(size, crop_fraction, method,
                                            antialias)

  def op(image, seed):
    del seed
    shape = tf.shape(image)
    side = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32) * crop_fraction
    side = tf.maximum(tf.cast(tf.round(side), tf.int32), 1)
    top = (shape[0] - side + 1) // 2
    left = (shape[1] - side + 1) // 2
    crop = image[top:top + side, left:left + side]
    return _resize(crop, height, width, method, antialias)
  return op


# The size-keeping ops, also applied to whole batches (batched_ops.py).
flip_lr = batched_ops.flip_lr
color_jitter = color_jitter_lib.color_jitter
grayscale = batched_ops.grayscale
gaussian_blur = batched_ops.gaussian_blur
solarize = batched_ops.solarize


# --- Spec strings ------------------------------------------------------------

# The host functions of data/op_table.py's ops, by name.
OPS = {name: spec.host_factory() for name, spec in op_table.OPS.items()}


# Specs are parsed without TensorFlow (the config checks use them too).
parse_spec = view_spec.parse


class View:
  """A view: `view(image, seed)`, or in two stages for a batched pipeline.

  Stage 1, `prepare(image, seed) -> (image, uniforms)`, runs per example:
  the ops up to the last size-setting one, then ONE draw of the
  `num_uniforms` numbers that the remaining, size-keeping ops use. Stage 2,
  `finish(images, uniforms)`, runs those ops on a batch of prepared images
  and their stacked uniforms. Calling the view runs both on one image.
  """

  def __init__(self, ops):
    batched = 0
    while batched < len(ops) and isinstance(ops[-1 - batched],
                                            batched_ops.BatchedOp):
      batched += 1
    self._per_example = ops[:len(ops) - batched]
    self._batched = batched_ops.sequence(ops[len(ops) - batched:])
    self.num_uniforms = self._batched.num_uniforms
    self._has_batched = batched > 0

  def prepare(self, image, seed):
    """(image after the per-example ops, float32 [num_uniforms])."""
    # One seed per per-example op, and one for all the batched ops.
    seeds = _split(seed, len(self._per_example) + 1)
    for op, op_seed in zip(self._per_example, seeds):
      image = op(image, op_seed)
    return image, tf.random.stateless_uniform([self.num_uniforms], seeds[-1])

  def finish(self, images, uniforms):
    """The size-keeping ops on [B, H, W, C] images; row i of `uniforms` is
    what `prepare` returned for image i."""
    return self._batched.apply(images, uniforms)

  def __call__(self, image, seed):
    if not self._per_example and not self._has_batched:
      return image
    image, uniforms = self.prepare(image, seed)
    if not self._has_batched:
      return image
    return self.finish(image[None], uniforms[None])[0]


def build_view(spec, field='view_augment'):
  """Returns the `View` applying the ops of `spec` in order.

  Ops draw from independent seeds split from `seed`, so the view is a pure
  function of (image, seed). An empty spec is the identity.
  """
  ops = []
  for name, args, kwargs in parse_spec(spec, field):
    op = op_table.spec_of(name, spec, field)
    ops.append(op_args.build_op(OPS[op.name], name, args, kwargs, spec=spec,
                                field=field))
  return View(ops)
