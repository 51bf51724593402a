"""Augmentation ops for contrastive views, composed by a spec string.

Every op is built by a factory from its parameters and returns
`fn(image, seed) -> image`, where `image` is ONE float32 HxWx3 image in [0, 1]
and `seed` an int tensor of shape [2]. Ops draw randomness only from stateless
TF ops, so the output is a pure function of (image, seed): the same in eager
mode and inside tf.data, and independent of the global TF random state.

A config names a view as a spec, big_vision style:

  'random_resized_crop(32, area=(0.25, 1.0))|flip_lr|color_jitter(0.5, p=0.8)'

Ops are separated by '|'; each is `name` or `name(args)` with Python literal
arguments (read with `ast.literal_eval`, never `eval`). `build_view` gives each
op its own seed, split from the view's seed.
"""

import ast
import inspect

import tensorflow as tf

from contrastive_jax.errors import ConfigError

_RESIZE_METHODS = ('area', 'bicubic', 'bilinear', 'gaussian', 'lanczos3',
                   'lanczos5', 'mitchellcubic', 'nearest')


# --- Helpers -----------------------------------------------------------------

def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _uniform(seed, low, high):
  return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


def _clip(image):
  return tf.clip_by_value(image, 0.0, 1.0)


def _check_probability(op, p):
  if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
    raise ConfigError(f'{op}: p must be a number in [0, 1], got {p!r}')


def _check_size(op, size):
  """Returns (height, width) from an int or a pair of ints."""
  pair = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
  if len(pair) != 2 or not all(
      isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
    raise ConfigError(
        f'{op}: size must be a positive int or (height, width), got {size!r}')
  return pair


def _check_range(op, name, value, low, high):
  """Checks a (min, max) pair inside [low, high] and returns it as floats."""
  ok = (isinstance(value, (tuple, list)) and len(value) == 2 and
        all(isinstance(v, (int, float)) and not isinstance(v, bool)
            for v in value))
  if not ok or not low <= value[0] <= value[1] <= high:
    raise ConfigError(f'{op}: {name} must be (min, max) with '
                      f'{low} <= min <= max <= {high}, got {value!r}')
  return float(value[0]), float(value[1])


def _check_method(op, method):
  if method not in _RESIZE_METHODS:
    raise ConfigError(f'{op}: method must be one of '
                      f'{", ".join(_RESIZE_METHODS)}, got {method!r}')


def _with_probability(p, fn):
  """Wraps `fn(image, seed)` so that it is applied with probability p."""
  if p == 0:
    return lambda image, seed: image  # Exactly the input, no seed used.

  def apply(image, seed):
    coin_seed, op_seed = _split(seed, 2)
    if p == 1:
      return fn(image, op_seed)
    # tf.cond, not tf.where: the skipped branch (e.g. a blur) is not computed.
    return tf.cond(tf.random.stateless_uniform([], coin_seed) < p,
                   lambda: fn(image, op_seed), lambda: image)
  return apply


def _resize(image, height, width, method):
  # Bicubic and lanczos overshoot at edges; keep the [0, 1] contract.
  return _clip(tf.image.resize(image, (height, width), method=method))


def _gray(image):
  return tf.image.rgb_to_grayscale(image)  # [H, W, 1], ITU-R 601 luma.


# --- Geometric ops -----------------------------------------------------------

def random_resized_crop(size, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3),
                        method='bicubic'):
  """Inception-style crop, then resize to `size`, as torchvision's.

  The crop covers a fraction `area` of the image with width/height ratio in
  `aspect`; after 10 failed attempts the whole image is used. Differences from
  torchvision: the aspect ratio is drawn uniformly (not log-uniformly), and the
  fallback is the whole image rather than a centre crop.
  """
  height, width = _check_size('random_resized_crop', size)
  area = _check_range('random_resized_crop', 'area', area, 0.0, 1.0)
  aspect = _check_range('random_resized_crop', 'aspect', aspect, 0.0,
                        float('inf'))
  if area[1] <= 0 or aspect[0] <= 0:
    raise ConfigError('random_resized_crop: area and aspect must be positive')
  _check_method('random_resized_crop', method)
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
  height, width = _check_size('resize', size)
  _check_method('resize', method)
  return lambda image, seed: _resize(image, height, width, method)


def center_crop(size, crop_fraction=0.875, method='bicubic'):
  """Crops the central square of side `crop_fraction` * the shorter side, then
  resizes to `size`: the usual eval view (0.875 = 224/256)."""
  height, width = _check_size('center_crop', size)
  if (isinstance(crop_fraction, bool) or
      not isinstance(crop_fraction, (int, float)) or
      not 0 < crop_fraction <= 1):
    raise ConfigError(
        f'center_crop: crop_fraction must be in (0, 1], got {crop_fraction!r}')
  _check_method('center_crop', method)

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


def flip_lr(p=0.5):
  """Mirrors the image left-right with probability p."""
  _check_probability('flip_lr', p)
  return _with_probability(p, lambda image, seed: image[:, ::-1])


# --- Colour ops --------------------------------------------------------------

def color_jitter(strength=1.0, p=0.8, brightness=None, contrast=None,
                 saturation=None, hue=None, random_order=True):
  """SimCLR colour distortion, applied as a whole with probability p.

  Unset amounts default to SimCLR's: 0.8 * strength for brightness, contrast
  and saturation, 0.2 * strength for hue (MoCo v1: all 0.4, p=1; MoCo v2:
  0.4/0.4/0.4/0.1, p=0.8). Each factor follows torchvision's ColorJitter:
  brightness scales pixels, contrast scales around the mean grey level,
  saturation blends with the greyscale image (all by a factor uniform in
  [max(0, 1 - x), 1 + x]), hue shifts by a delta uniform in [-hue, hue].
  A zero amount skips its op, so strength 0 is exactly the identity.
  """
  name = 'color_jitter'
  _check_probability(name, p)
  amounts = {}
  for field, value, scale in (('brightness', brightness, 0.8),
                              ('contrast', contrast, 0.8),
                              ('saturation', saturation, 0.8),
                              ('hue', hue, 0.2)):
    value = scale * strength if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        value < 0):
      raise ConfigError(f'{name}: {field} (and strength) must be a number '
                        f'>= 0, got {value!r}')
    amounts[field] = float(value)
  if amounts['hue'] > 0.5:
    raise ConfigError(f'{name}: hue must be <= 0.5 (0.2 * strength unless '
                      f'set), got {amounts["hue"]!r}')

  def factor(seed, amount):
    return _uniform(seed, max(0.0, 1.0 - amount), 1.0 + amount)

  def adjust_brightness(image, seed):
    return image * factor(seed, amounts['brightness'])

  def adjust_contrast(image, seed):
    mean = tf.reduce_mean(_gray(image))
    return (image - mean) * factor(seed, amounts['contrast']) + mean

  def adjust_saturation(image, seed):
    gray = _gray(image)
    return gray + (image - gray) * factor(seed, amounts['saturation'])

  def adjust_hue(image, seed):
    delta = _uniform(seed, -amounts['hue'], amounts['hue'])
    return tf.image.adjust_hue(image, delta)

  adjusts = [fn for fn, field in ((adjust_brightness, 'brightness'),
                                  (adjust_contrast, 'contrast'),
                                  (adjust_saturation, 'saturation'),
                                  (adjust_hue, 'hue')) if amounts[field] > 0]

  def jitter(image, seed):
    order_seed, *seeds = _split(seed, len(adjusts) + 1)
    if not random_order or len(adjusts) < 2:
      for adjust, op_seed in zip(adjusts, seeds):
        image = _clip(adjust(image, op_seed))
      return image
    order = tf.argsort(tf.random.stateless_uniform([len(adjusts)], order_seed))
    for position in range(len(adjusts)):
      # Each op keeps its own seed wherever the permutation puts it.
      branches = [
          lambda a=adjust, s=op_seed, x=image: _clip(a(x, s))
          for adjust, op_seed in zip(adjusts, seeds)]
      image = tf.switch_case(order[position], branches)
    return image

  if not adjusts:
    return lambda image, seed: image
  return _with_probability(p, jitter)


def grayscale(p=0.2):
  """Replaces the image by its luma in all 3 channels, with probability p."""
  _check_probability('grayscale', p)
  return _with_probability(
      p, lambda image, seed: tf.image.grayscale_to_rgb(_gray(image)))


def solarize(p=0.0, threshold=0.5):
  """Inverts pixels >= threshold (x -> 1 - x), with probability p (BYOL)."""
  _check_probability('solarize', p)
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
    raise ConfigError(
        f'solarize: threshold must be a number, got {threshold!r}')
  return _with_probability(
      p, lambda image, seed: tf.where(image >= threshold, 1.0 - image, image))


# --- Blur --------------------------------------------------------------------

def gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1):
  """Gaussian blur with sigma uniform in `sigma`, with probability p.

  As SimCLR: the kernel spans `kernel_fraction` of the image side (radius =
  int(side * kernel_fraction) // 2, side = 2 * radius + 1; side is the shorter
  image side, known only when called). Below 20 px the radius is 0 and the
  blur is the identity. Because kernel_fraction < 1, the kernel always fits in
  the image, so nothing needs checking at call time. Separable (two 1-D
  depthwise convolutions) with reflect padding, which keeps a constant image
  constant.
  """
  _check_probability('gaussian_blur', p)
  low, high = _check_range('gaussian_blur', 'sigma', sigma, 0.0, float('inf'))
  if low <= 0:
    raise ConfigError(f'gaussian_blur: sigma must be > 0, got {sigma!r}')
  if (isinstance(kernel_fraction, bool) or
      not isinstance(kernel_fraction, (int, float)) or
      not 0 < kernel_fraction < 1):
    raise ConfigError('gaussian_blur: kernel_fraction must be in (0, 1), '
                      f'got {kernel_fraction!r}')

  def blur(image, seed):
    shape = tf.shape(image)
    side = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    radius = tf.cast(tf.floor(side * kernel_fraction), tf.int32) // 2
    std = _uniform(seed, low, high)
    x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(std)))
    kernel /= tf.reduce_sum(kernel)
    channels = image.shape[-1] or 3
    # Depthwise filters: [rows, cols, channels, 1]; same 1-D kernel per channel.
    column = tf.tile(kernel[:, None, None, None], [1, 1, channels, 1])
    row = tf.tile(kernel[None, :, None, None], [1, 1, channels, 1])
    padded = tf.pad(image[None],
                    [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                    mode='REFLECT')
    out = tf.nn.depthwise_conv2d(padded, column, [1, 1, 1, 1], 'VALID')
    out = tf.nn.depthwise_conv2d(out, row, [1, 1, 1, 1], 'VALID')
    out = tf.reshape(out, shape)  # Restores the static shape for tf.cond.
    return _clip(out)
  return _with_probability(p, blur)


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


def build_view(spec, field='view_augment'):
  """Returns `fn(image, seed) -> image` applying the ops of `spec` in order.

  Op i gets the i-th seed split from `seed`, so ops are independent and the
  view is a pure function of (image, seed). An empty spec is the identity.
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

  def view(image, seed):
    if not ops:
      return image
    for op, op_seed in zip(ops, _split(seed, len(ops))):
      image = op(image, op_seed)
    return image
  return view
