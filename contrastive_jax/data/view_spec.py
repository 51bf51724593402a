"""Augmentation spec strings without TensorFlow: parsing, op names, the
size of the images a spec makes.

The config checks run here before anything is built (and in the
benchmarks, which never import TensorFlow); `augment.build_view` builds
the ops themselves and checks their arguments.
"""

import ast

from contrastive_jax.config import lib as config_lib
from contrastive_jax.data import op_args
from contrastive_jax.data import op_table
from contrastive_jax.errors import ConfigError

# The ops and which of them set the size: data/op_table.py's records.
OP_NAMES = op_table.OP_NAMES
SIZE_OPS = op_table.SIZE_OPS
known_ops = op_table.known_ops


def parse(spec, field='view_augment'):
  """Parses 'op1(args)|op2|...' into [(name, args tuple, kwargs dict)].

  `field` is the config field holding the spec, named in errors. Does not
  check op names or arguments against the ops; `augment.build_view` does.
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


def output_size(spec, field='view_augment') -> tuple[int, int] | None:
  """(height, width) of every image the spec makes: the size of its last
  size-setting op; None when it keeps each input's size. A ConfigError for
  an unknown op or a bad size."""
  size = None
  for name, args, kwargs in parse(spec, field):
    op = op_table.spec_of(name, spec, field)
    if op.sets_size and (args or 'size' in kwargs):
      try:
        size = op_args.check_size(name, args[0] if args else kwargs['size'])
      except ConfigError as e:
        raise ConfigError(f'{field}: {e}') from None
  return size


def view_key(index: int) -> str:
  """The batch key of view `index` (from 1): 'view1', 'view2', ..."""
  return f'view{index}'


def uniforms_key(index: int) -> str:
  """The batch key of the uniforms view `index` draws on the device
  (`augment_on_device`): 'uniforms1', ..."""
  return f'uniforms{index}'


def views_in(batch) -> list:
  """The views a batch holds, in order: batch['view1'], batch['view2'], ...
  up to the first index it lacks."""
  views, index = [], 1
  while view_key(index) in batch:
    views.append(batch[view_key(index)])
    index += 1
  return views


def check_spec(spec, field='view_augment'):
  """Every op of `spec` known and its arguments valid (each op's check in
  data/op_table.py), without building anything: one ConfigError naming
  `field`."""
  for name, args, kwargs in parse(spec, field):
    op_table.check_call(op_table.spec_of(name, spec, field), args, kwargs,
                        spec=spec, field=field)


def training_views(config, num_views: int,
                   extra_views: bool = False) -> list[tuple[str, str]]:
  """(config field, spec) of each view a training batch holds, in order:
  'view_augment' and 'view_augment_2' (empty: the same as the first), the
  first `num_views` of them, then, for a method that takes them
  (`Method.extra_views`), each of `config.extra_views` (multi-crop's small
  views, any fixed size)."""
  first = config.view_augment
  views = [('view_augment', first),
           ('view_augment_2', config_lib.value(config, 'view_augment_2') or first)]
  views = views[:num_views]
  if extra_views:
    views += [(f'extra_views[{i}]', spec)
              for i, spec in enumerate(config_lib.value(config, 'extra_views') or ())]
  return views
