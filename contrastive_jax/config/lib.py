"""The one way to get a config: a file by name with overrides (`load`), or a
stored one brought up to date (`upgrade`); and each field's one default
(`value`).

    config = config_lib.load("simclr:digits", ["batch_size=64",
                                               "head.output_dim=32"])
    config = config_lib.load("configs/moco_v2.py:cifar10")
    config = config_lib.upgrade(ckpt.restore_config(step))
    limit = config_lib.value(config, "max_consecutive_nonfinite")

`load` is what `--config=configs/NAME.py:VARIANT --config.FIELD=VALUE` does
for `main`, for tests, benchmarks and notebooks. An override's text is read
by the field's type with the parsers ml_collections' config flags use on the
command line (absl's int, float and bool parsers, its tuple parser, strings
as they are), so `FIELD=VALUE` means the same here as after `--config.`. An
unknown field or a value the field's type refuses is one ConfigError line.
The configs live beside the package in a source checkout (they are data, not
code of the package); another directory can be given.
"""

import ast
import difflib
import importlib.util
import os
from typing import Any, Iterable, Mapping

import ml_collections
from absl import flags
from ml_collections.config_flags import config_path, tuple_parser

from contrastive_jax.config import defaults
from contrastive_jax.errors import ConfigError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")

# By the field's current type, as config_flags parses `--config.FIELD=...`.
_PARSERS = {
    int: flags.IntegerParser(),
    float: flags.FloatParser(),
    bool: flags.BooleanParser(),
    tuple: tuple_parser.TupleParser(),
    str: flags.ArgumentParser(),
}


def config_names(config_dir: str = CONFIG_DIR) -> list[str]:
  """Every config file in `config_dir`, by name (no extension)."""
  return sorted(f[:-3] for f in os.listdir(config_dir)
                if f.endswith(".py") and not f.startswith("_"))


def module(name: str, config_dir: str = CONFIG_DIR):
  """The config file `name` ('simclr', or a path to a .py) as a module."""
  path = (name if name.endswith(".py")
          else os.path.join(config_dir, f"{name}.py"))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file {path}")
  stem = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"configs_{stem}", path)
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  return loaded


def load(spec: str, overrides: Iterable[str] | Mapping[str, Any] = (),
         config_dir: str = CONFIG_DIR) -> ml_collections.ConfigDict:
  """`spec` as on the command line: 'NAME[:VARIANT]' for configs/NAME.py, or
  'PATH.py[:VARIANT]' (no variant: the file's default), with `overrides`
  applied in order (`apply_overrides`)."""
  name, _, variant = spec.partition(":")
  config = module(name, config_dir).get_config(variant or None)
  return apply_overrides(config, overrides)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Iterable[str] | Mapping[str, Any]
                   ) -> ml_collections.ConfigDict:
  """Sets each override on `config` (in place; returned). Strings are
  'FIELD=TEXT' with TEXT read by the field's type (`parse_value`); a
  mapping gives each dotted FIELD its Python value. FIELD may be nested
  ('head.output_dim')."""
  if isinstance(overrides, str):
    raise TypeError(f"overrides must be a list of 'FIELD=VALUE' strings, "
                    f"not one string: {overrides!r}")
  if isinstance(overrides, Mapping):
    for field, value in overrides.items():
      set_value(config, field, value)
    return config
  for pair in overrides:
    field, equals, text = pair.partition("=")
    if not equals:
      raise ConfigError(f"override {pair!r} is invalid: write FIELD=VALUE")
    set_value(config, field, parse_value(config, field, text))
  return config


def _field_type(config, field: str):
  try:
    return config_path.get_type(field, config)
  except (AttributeError, KeyError, IndexError) as e:
    known = list(defaults.dotted(config.to_dict(), blocks=True))
    close = difflib.get_close_matches(field, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"config.{field} is not a field of this "
                      f"config{hint}") from e


def parse_value(config: ml_collections.ConfigDict, field: str, text: str):
  """`text` as the value of `field`, read as `--config.FIELD=TEXT` reads
  it: by the field's type (a placeholder's declared type; any other None
  field: a Python literal, else the text)."""
  kind = _field_type(config, field)
  if isinstance(kind, type) and issubclass(kind, ml_collections.ConfigDict):
    kind = dict
  try:
    if kind in _PARSERS:
      return _PARSERS[kind].parse(text)
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError) as e:
    if kind in _PARSERS:
      raise ConfigError(f"config.{field}={text!r} is invalid: "
                        f"{str(e).splitlines()[0]}") from e
    return text
  if kind is dict:
    if not isinstance(value, dict):
      raise ConfigError(f"config.{field}={text!r} is invalid: must be a "
                        "dict")
    return ml_collections.ConfigDict(value)
  return value


def set_value(config: ml_collections.ConfigDict, field: str, value: Any):
  """config.FIELD = value for a dotted FIELD that exists, with
  ConfigDict's type rules (an int becomes a float field's float)."""
  _field_type(config, field)
  try:
    config_path.set_value(field, config, value)
  except TypeError as e:
    raise ConfigError(f"config.{field}={value!r} is invalid: "
                      f"{str(e).splitlines()[0]}") from e


def value(config, field: str):
  """`config`'s value of `field` (dotted names for blocks: 'data.
  max_bad_fraction'), or its one default (`defaults.field_default`) where
  the config lacks it: a config from before the field existed, or one that
  leaves a method's optional field out."""
  node = config
  *blocks, leaf = field.split(".")
  for block in blocks:
    node = node.get(block) if node is not None else None
  if node is not None and leaf in node:
    return node[leaf]
  return defaults.field_default(field)


def upgrade(stored) -> ml_collections.ConfigDict:
  """A config stored by a run (a checkpoint's or workdir's, as a dict or
  ConfigDict), with today's default (`defaults.field_default`) for each
  field of today's base config it lacks: fields added since it was
  written. Its own values are kept as they are."""
  config = ml_collections.ConfigDict(
      stored.to_dict() if isinstance(stored, ml_collections.ConfigDict)
      else stored)
  _fill(config, defaults.base_config().to_dict())
  return config


def _fill(config: ml_collections.ConfigDict, base: dict):
  for key, default in base.items():
    if key not in config:
      config[key] = default
    elif isinstance(default, dict) and isinstance(config[key],
                                                  ml_collections.ConfigDict):
      _fill(config[key], default)
