"""Checks of augmentation op arguments, shared by every op module: the
host's TF ops and their device twins (device_ops.py) take the same
arguments and check them here, once.

Each raises a one-line ConfigError naming the op; `build_op` prefixes the
config field.
"""

import inspect

from contrastive_jax.errors import ConfigError

RESIZE_METHODS = ('area', 'bicubic', 'bilinear', 'gaussian', 'lanczos3',
                  'lanczos5', 'mitchellcubic', 'nearest')


def check_probability(op, p):
  if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
    raise ConfigError(f'{op}: p must be a number in [0, 1], got {p!r}')


def check_size(op, size):
  """Returns (height, width) from an int or a pair of ints."""
  pair = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
  if len(pair) != 2 or not all(
      isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
    raise ConfigError(
        f'{op}: size must be a positive int or (height, width), got {size!r}')
  return pair


def check_range(op, name, value, low, high):
  """Checks a (min, max) pair inside [low, high] and returns it as floats."""
  ok = (isinstance(value, (tuple, list)) and len(value) == 2 and
        all(isinstance(v, (int, float)) and not isinstance(v, bool)
            for v in value))
  if not ok or not low <= value[0] <= value[1] <= high:
    raise ConfigError(f'{op}: {name} must be (min, max) with '
                      f'{low} <= min <= max <= {high}, got {value!r}')
  return float(value[0]), float(value[1])


def check_method(op, method):
  if method not in RESIZE_METHODS:
    raise ConfigError(f'{op}: method must be one of '
                      f'{", ".join(RESIZE_METHODS)}, got {method!r}')


def build_op(factory, name, args, kwargs, *, spec, field):
  """`factory(*args, **kwargs)` for op `name` of `spec` (config field
  `field`): a call that does not fit the factory's signature, or arguments
  it rejects, as one ConfigError naming the field."""
  try:
    inspect.signature(factory).bind(*args, **kwargs)
  except TypeError as e:
    raise ConfigError(f'{field}: bad arguments for op {name!r} in {spec!r} '
                      f'({e}); signature {name}{inspect.signature(factory)}'
                      ) from None
  try:
    return factory(*args, **kwargs)
  except ConfigError as e:
    raise ConfigError(f'{field}: {e}') from None


def check_solarize(p, threshold):
  check_probability('solarize', p)
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
    raise ConfigError(
        f'solarize: threshold must be a number, got {threshold!r}')


BLUR_PADDINGS = ('reflect', 'zeros')


def check_blur(p, sigma, kernel_fraction, kernel_size=None,
               padding='reflect'):
  """gaussian_blur's arguments; returns sigma's (low, high)."""
  if kernel_size is not None and (
      isinstance(kernel_size, bool) or not isinstance(kernel_size, int)
      or kernel_size < 3 or kernel_size % 2 == 0):
    raise ConfigError('gaussian_blur: kernel_size must be an odd integer '
                      f'>= 3 (or None: kernel_fraction), got {kernel_size!r}')
  if padding not in BLUR_PADDINGS:
    raise ConfigError(f'gaussian_blur: padding must be one of '
                      f'{", ".join(BLUR_PADDINGS)}; got {padding!r}')
  check_probability('gaussian_blur', p)
  low, high = check_range('gaussian_blur', 'sigma', sigma, 0.0, float('inf'))
  if low <= 0:
    raise ConfigError(f'gaussian_blur: sigma must be > 0, got {sigma!r}')
  if (isinstance(kernel_fraction, bool) or
      not isinstance(kernel_fraction, (int, float)) or
      not 0 < kernel_fraction < 1):
    raise ConfigError('gaussian_blur: kernel_fraction must be in '
                      f'(0, 1), got {kernel_fraction!r}')
  return low, high


# color_jitter's references (color_jitter.py's docstring) and, per impl,
# which of brightness, contrast, saturation, hue is an added delta (the
# others are factors).
JITTER_IMPLS = {
    'simclr_v1': (True, False, False, True),
    'simclr_v2': (False, False, False, True),
    'torchvision': (False, False, False, True),
}
# The default amounts are SimCLR's, times `strength`.
JITTER_FIELDS = (('brightness', 0.8), ('contrast', 0.8), ('saturation', 0.8),
                 ('hue', 0.2))


def jitter_ops(impls, *, strength, p, impl, brightness, contrast,
               saturation, hue):
  """color_jitter's arguments checked; returns (adjusts, lows, highs) of
  the ops that act (amount > 0), in order: each one's adjust function from
  `impls[impl]` (a module's brightness, contrast, saturation and hue
  functions: the host's TF ones or the device's JAX ones) and the range of
  its draw, a factor uniform in [max(0, 1 - x), 1 + x] for an amount x or
  a delta in [-x, x]."""
  name = 'color_jitter'
  check_probability(name, p)
  if impl not in JITTER_IMPLS:
    raise ConfigError(f'{name}: impl must be one of '
                      f'{", ".join(JITTER_IMPLS)}, got {impl!r}')
  given = dict(brightness=brightness, contrast=contrast,
               saturation=saturation, hue=hue)
  adjusts, lows, highs = [], [], []
  for adjust, (field, scale), is_delta in zip(
      impls[impl], JITTER_FIELDS, JITTER_IMPLS[impl]):
    value = scale * strength if given[field] is None else given[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        value < 0):
      raise ConfigError(f'{name}: {field} (and strength) must be a '
                        f'number >= 0, got {value!r}')
    if field == 'hue' and value > 0.5:
      raise ConfigError(f'{name}: hue must be <= 0.5 (0.2 * strength '
                        f'unless set), got {float(value)!r}')
    if value > 0:
      adjusts.append(adjust)
      lows.append(-value if is_delta else max(0.0, 1.0 - value))
      highs.append(value if is_delta else 1.0 + value)
  return adjusts, lows, highs


# --- Each op's check, with the op's own signature (data/op_table.py) -------

CROP_IMPLS = ('tf', 'torchvision')


def _check_bool(op, name, value):
  if not isinstance(value, bool):
    raise ConfigError(f'{op}: {name} must be True or False, got {value!r}')


def check_random_resized_crop(size, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3),
                              method='bicubic', impl='tf',
                              min_object_covered=0.0, max_attempts=10,
                              antialias=False):
  """random_resized_crop's arguments; returns (height, width, area,
  aspect)."""
  name = 'random_resized_crop'
  height, width = check_size(name, size)
  area = check_range(name, 'area', area, 0.0, 1.0)
  aspect = check_range(name, 'aspect', aspect, 0.0, float('inf'))
  if area[1] <= 0 or aspect[0] <= 0:
    raise ConfigError(f'{name}: area and aspect must be positive')
  check_method(name, method)
  if impl not in CROP_IMPLS:
    raise ConfigError(f'{name}: impl must be one of {", ".join(CROP_IMPLS)}, '
                      f'got {impl!r}')
  if (isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or
      max_attempts < 1):
    raise ConfigError(
        f'{name}: max_attempts must be an int >= 1, got {max_attempts!r}')
  if (isinstance(min_object_covered, bool) or
      not isinstance(min_object_covered, (int, float)) or
      not 0 <= min_object_covered <= 1):
    raise ConfigError(f'{name}: min_object_covered must be in [0, 1], got '
                      f'{min_object_covered!r}')
  if impl == 'torchvision' and min_object_covered:
    raise ConfigError(f"{name}: min_object_covered is impl='tf' only")
  _check_bool(name, 'antialias', antialias)
  return height, width, area, aspect


def check_resize(size, method='bicubic'):
  """resize's arguments; returns (height, width)."""
  height, width = check_size('resize', size)
  check_method('resize', method)
  return height, width


def check_center_crop(size, crop_fraction=0.875, method='bicubic',
                      antialias=False):
  """center_crop's arguments; returns (height, width)."""
  height, width = check_size('center_crop', size)
  if (isinstance(crop_fraction, bool) or
      not isinstance(crop_fraction, (int, float)) or
      not 0 < crop_fraction <= 1):
    raise ConfigError(
        f'center_crop: crop_fraction must be in (0, 1], got {crop_fraction!r}')
  check_method('center_crop', method)
  _check_bool('center_crop', 'antialias', antialias)
  return height, width


def check_flip_lr(p=0.5):
  check_probability('flip_lr', p)


def check_grayscale(p=0.2):
  check_probability('grayscale', p)


def check_solarize_op(p=0.0, threshold=0.5):
  check_solarize(p, threshold)


def check_gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1,
                        kernel_size=None, padding='reflect'):
  return check_blur(p, sigma, kernel_fraction, kernel_size, padding)


def check_color_jitter(strength=1.0, p=0.8, brightness=None, contrast=None,
                       saturation=None, hue=None, random_order=True,
                       impl='torchvision'):
  """color_jitter's arguments (`jitter_ops` without the adjust functions;
  `random_order` is read as a truth value, as the op reads it)."""
  del random_order
  jitter_ops({name: (None,) * 4 for name in JITTER_IMPLS}, strength=strength,
             p=p, impl=impl, brightness=brightness, contrast=contrast,
             saturation=saturation, hue=hue)
