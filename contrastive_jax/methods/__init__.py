"""Methods by name. Each is a `base.Method` that its module exports:
contrastive pretraining, and the supervised classifiers that evaluate or
finetune its encoder.

Modules are imported when a method is asked for, so that importing the
registry imports no method (the classifiers import `pretrained`, which uses
the registry to read any checkpoint).
"""

import importlib

from contrastive_jax.config import defaults as config_defaults
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods.base import Method

# config.method -> "module:attribute" of its Method. A new method adds a
# line here and nothing anywhere else (a family of configs with a base of
# its own names it in its Method's `base_config`).
_REGISTRY = {
    "barlow_twins": "contrastive_jax.methods.barlow_twins:METHOD",
    "byol": "contrastive_jax.methods.byol:METHOD",
    "dino": "contrastive_jax.methods.dino:METHOD",
    "moco": "contrastive_jax.methods.moco:METHOD",
    "moco_v3": "contrastive_jax.methods.moco_v3:METHOD",
    "simclr": "contrastive_jax.methods.simclr:METHOD",
    "simsiam": "contrastive_jax.methods.simsiam:METHOD",
    "vicreg": "contrastive_jax.methods.vicreg:METHOD",
    # Supervised training on a pretrained encoder (one module, two modes).
    "linear_eval": "contrastive_jax.methods.classifier:LINEAR_EVAL",
    "finetune": "contrastive_jax.methods.classifier:FINETUNE",
}


def names() -> list[str]:
  return sorted(_REGISTRY)


def get_method(name: str) -> Method:
  if name not in _REGISTRY:
    raise ConfigError(
        f"config.method={name!r} is not a known method; "
        f"choose one of: {', '.join(names())}")
  module, attribute = _REGISTRY[name].split(":")
  method = getattr(importlib.import_module(module), attribute)
  assert method.name == name, (method.name, name)
  return method


def base_config(name: str):
  """The base config of method `name`'s family (its Method's `base_config`:
  config.defaults.base_config for most), and config.defaults.base_config
  for a name that is not a method."""
  if name not in _REGISTRY:
    return config_defaults.base_config()
  return get_method(name).base_config()


def pretraining_methods() -> list[str]:
  """Methods whose checkpoints hold an encoder to evaluate or finetune."""
  return [n for n in names() if get_method(n).pretrains_encoder]


__all__ = ["Method", "base_config", "get_method", "names",
           "pretraining_methods"]
