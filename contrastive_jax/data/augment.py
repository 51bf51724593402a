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

import ast
import inspect

import tensorflow as tf

from contrastive_jax.data import batched_ops
from contrastive_jax.data import color_jitter as color_jitter_lib
from contrastive_jax.data import op_args
from contrastive_jax.errors import ConfigError


# --- Helpers -----------------------------------------------------------------

def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _resize(image, height, width, method):
  # Bicubic and lanczos overshoot at edges; keep the [0, 1] contract.
  return tf.clip_by_value(
      tf.image.resize(image, (height, width), method=method), 0.0, 1.0)


# --- Geometric ops -----------------------------------------------------------

def random_resized_crop(size, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3),
                        method='bicubic'):
  """Inception-style crop, then resize to `size`, as torchvision's.

  The crop covers a fraction `area` of the image with width/height ratio in
  `aspect`; after 10 failed attempts the whole image is used. Differences from
  torchvision: the aspect ratio is drawn uniformly (not log-uniformly), and the
  fallback is the whole image rather than a centre crop.
  """
  height, width = op_args.check_size('random_resized_crop', size)
  area = op_args.check_range('random_resized_crop', 'area', area, 0.0, 1.0)
  aspect = op_args.check_range('random_resized_crop', 'aspect', aspect, 0.0,
                               float('inf'))
  if area[1] <= 0 or aspect[0] <= 0:
    raise ConfigError('random_resized_crop: area and aspect must be positive')
  op_args.check_method('random_resized_crop', method)
  whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])

  def op(image, seed):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=whole_image, seed=seed,
        # 0: no constraint beyond `area` (the whole image is the "object").
        min_object_covered=0.0, aspect_ratio_range=aspect, area_range=area,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, image.shape[-1]])
    return _resize(crop, height, width, method)
  return op


def resize(size, method='bicubic'):
  """Deterministic resize to `size` (aspect ratio not kept)."""
  height, width = op_args.check_size('resize', size)
  op_args.check_method('resize', method)
  return lambda image, seed: _resize(image, height, width, method)


def center_crop(size, crop_fraction=0.875, method='bicubic'):
  """Crops the central square of side `crop_fraction` * the shorter side, then
  resizes to `size`: the usual eval view (0.875 = 224/256)."""
  height, width = op_args.check_size('center_crop', size)
  if (isinstance(crop_fraction, bool) or
      not isinstance(crop_fraction, (int, float)) or
      not 0 < crop_fraction <= 1):
    raise ConfigError(
        f'center_crop: crop_fraction must be in (0, 1], got {crop_fraction!r}')
  op_args.check_method('center_crop', method)

  def op(image, seed):
    del seed
    shape = tf.shape(image)
    side = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32) * crop_fraction
    side = tf.maximum(tf.cast(tf.round(side), tf.int32), 1)
    top = (shape[0] - side + 1) // 2
    left = (shape[1] - side + 1) // 2
    crop = image[top:top + side, left:left + side]
    return _resize(crop, height, width, method)
  return op


# The size-keeping ops, also applied to whole batches (batched_ops.py).
flip_lr = batched_ops.flip_lr
color_jitter = color_jitter_lib.color_jitter
grayscale = batched_ops.grayscale
gaussian_blur = batched_ops.gaussian_blur
solarize = batched_ops.solarize


# --- Spec strings ------------------------------------------------------------

OPS = {
    'random_resized_crop': random_resized_crop,
    'resize': resize,
    'center_crop': center_crop,
    'flip_lr': flip_lr,
    'color_jitter': color_jitter,
    'grayscale': grayscale,
    'gaussian_blur': gaussian_blur,
    'solarize': solarize,
}


def _known_ops():
  return 'known ops: ' + ', '.join(sorted(OPS))


def parse_spec(spec, field='view_augment'):
  """Parses 'op1(args)|op2|...' into [(name, args tuple, kwargs dict)].

  `field` is the config field holding the spec, named in errors. Does not
  check op names or arguments against the ops; `build_view` does.
  """
  if not isinstance(spec, str):
    raise ConfigError(f'{field}: expected an op spec string, got {spec!r}')
  if not spec.strip():
    return []
  ops = []
  for part in spec.split('|'):
    text = part.strip()
    try:
      node = ast.parse(text, mode='eval').body
    except SyntaxError:
      node = None
    if isinstance(node, ast.Name):
      ops.append((node.id, (), {}))
      continue
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
      raise ConfigError(f'{field}: cannot parse op {text!r} in {spec!r}; write '
                        "'name' or 'name(literal args)' joined by '|'")
    try:
      if any(kw.arg is None for kw in node.keywords):
        raise ValueError('** arguments')
      args = tuple(ast.literal_eval(arg) for arg in node.args)
      kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError:
      raise ConfigError(f'{field}: arguments of {node.func.id!r} must be '
                        f'Python literals, got {text!r}') from None
    ops.append((node.func.id, args, kwargs))
  return ops


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
    factory = OPS.get(name)
    if factory is None:
      raise ConfigError(
          f'{field}: unknown op {name!r} in {spec!r}; {_known_ops()}')
    try:
      inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as e:
      raise ConfigError(f'{field}: bad arguments for op {name!r} in {spec!r} '
                        f'({e}); signature {name}{inspect.signature(factory)}'
                        ) from None
    try:
      ops.append(factory(*args, **kwargs))
    except ConfigError as e:
      raise ConfigError(f'{field}: {e}') from None
  return View(ops)
