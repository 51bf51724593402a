"""Pretraining methods by name: each is one module with the same three
functions (see methods/simclr.py)."""

import types

from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import simclr

METHODS: dict[str, types.ModuleType] = {
    "simclr": simclr,
}


def get_method(name: str) -> types.ModuleType:
  if name not in METHODS:
    raise ConfigError(
        f"config.method={name!r} is not a known method; "
        f"choose one of: {', '.join(sorted(METHODS))}")
  return METHODS[name]
