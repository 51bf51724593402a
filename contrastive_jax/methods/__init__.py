"""Methods by name. Each is a `base.Method` that its module exports:
contrastive pretraining, and the supervised classifiers that evaluate or
finetune its encoder.

Modules are imported when a method is asked for, so that importing the
registry imports no method (the classifiers import `pretrained`, which uses
the registry to read any checkpoint).
"""

import importlib

from contrastive_jax.errors import ConfigError
from contrastive_jax.methods.base import Method

# config.method -> "module:attribute" of its Method. A new method adds a
# line here (and one in _BASE_CONFIGS if its configs start from a base of
# their own) and nothing anywhere else.
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


# config.method -> "module:function" of the config its family of configs
# starts from, where that is not config.defaults.base_config: a field that a
# stored config (an older run's) lacks is taken at its value there when the
# run resumes (resume_check.default_values).
_BASE_CONFIGS = {
    "moco": "contrastive_jax.config.defaults:moco_base_config",
    "linear_eval": "contrastive_jax.config.classifier:linear_eval_base",
    "finetune": "contrastive_jax.config.classifier:finetune_base",
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
  """The base config of method `name`'s family (config.defaults.base_config
  for most, and for a name that is not a method)."""
  module, attribute = _BASE_CONFIGS.get(
      name, "contrastive_jax.config.defaults:base_config").split(":")
  return getattr(importlib.import_module(module), attribute)()


def pretraining_methods() -> list[str]:
  """Methods whose checkpoints hold an encoder to evaluate or finetune."""
  return [n for n in names() if get_method(n).pretrains_encoder]


__all__ = ["Method", "base_config", "get_method", "names",
           "pretraining_methods"]
