"""Checks of augmentation op arguments, shared by every op module.

Each raises a one-line ConfigError naming the op; `augment.build_view`
prefixes the config field.
"""

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
