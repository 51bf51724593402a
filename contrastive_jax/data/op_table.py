"""One record per augmentation op: its name, whether it sets the image
size, its host function (TensorFlow, per example or batched), its device
function (JAX, for `augment_on_device`; size-keeping ops only) and its
argument check. Adding an op is one entry here (and its functions).

Imports neither TensorFlow nor JAX: the functions are named by
'module:attribute' and imported when a view is built; the checks
(`op_args`) run anywhere, e.g. in the config checks before anything is
built. The check has the op's own signature and defaults (tested against
both functions'), and both functions run the same checks (op_args).
"""

import dataclasses
import importlib
import inspect
from typing import Callable

from contrastive_jax.data import op_args
from contrastive_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class OpSpec:
  name: str
  sets_size: bool           # its first argument `size` is the output size
  host: str                 # 'module:attribute' of the TF op factory
  device: str | None        # of its JAX twin; None: host only
  check: Callable           # the arguments' check, with the op's signature

  def host_factory(self) -> Callable:
    return _resolve(self.host)

  def device_factory(self) -> Callable:
    if self.device is None:
      raise ValueError(f'op {self.name!r} has no device function')
    return _resolve(self.device)


def _resolve(path: str) -> Callable:
  module, attribute = path.split(':')
  return getattr(importlib.import_module(module), attribute)


_DATA = 'contrastive_jax.data'
OPS = {spec.name: spec for spec in (
    OpSpec('random_resized_crop', True, f'{_DATA}.augment:random_resized_crop',
           None, op_args.check_random_resized_crop),
    OpSpec('resize', True, f'{_DATA}.augment:resize', None,
           op_args.check_resize),
    OpSpec('center_crop', True, f'{_DATA}.augment:center_crop', None,
           op_args.check_center_crop),
    OpSpec('flip_lr', False, f'{_DATA}.batched_ops:flip_lr',
           f'{_DATA}.device_ops:flip_lr', op_args.check_flip_lr),
    OpSpec('color_jitter', False, f'{_DATA}.color_jitter:color_jitter',
           f'{_DATA}.device_ops:color_jitter', op_args.check_color_jitter),
    OpSpec('grayscale', False, f'{_DATA}.batched_ops:grayscale',
           f'{_DATA}.device_ops:grayscale', op_args.check_grayscale),
    OpSpec('gaussian_blur', False, f'{_DATA}.batched_ops:gaussian_blur',
           f'{_DATA}.device_ops:gaussian_blur', op_args.check_gaussian_blur),
    OpSpec('solarize', False, f'{_DATA}.batched_ops:solarize',
           f'{_DATA}.device_ops:solarize', op_args.check_solarize_op),
)}
OP_NAMES = tuple(sorted(OPS))
SIZE_OPS = tuple(name for name in OP_NAMES if OPS[name].sets_size)


def known_ops() -> str:
  return 'known ops: ' + ', '.join(OP_NAMES)


def spec_of(name: str, spec: str, field: str) -> OpSpec:
  """The OpSpec named `name` in `spec` (config field `field`), or the
  ConfigError naming the known ops."""
  if name not in OPS:
    raise ConfigError(
        f'{field}: unknown op {name!r} in {spec!r}; {known_ops()}')
  return OPS[name]


def check_call(op: OpSpec, args, kwargs, *, spec: str, field: str):
  """The op's check on `args`/`kwargs`: a call that does not fit its
  signature, or a value it rejects, as one ConfigError naming `field`."""
  try:
    inspect.signature(op.check).bind(*args, **kwargs)
  except TypeError as e:
    raise ConfigError(
        f'{field}: bad arguments for op {op.name!r} in {spec!r} ({e}); '
        f'signature {op.name}{inspect.signature(op.check)}') from None
  try:
    op.check(*args, **kwargs)
  except ConfigError as e:
    raise ConfigError(f'{field}: {e}') from None
