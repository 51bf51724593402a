"""Methods by name: each is one module with the same three functions (see
methods/simclr.py) - contrastive pretraining, and the supervised classifiers
that evaluate or finetune its encoder."""

import types

from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import classifier, moco, simclr

METHODS: dict[str, types.ModuleType] = {
    "moco": moco,
    "simclr": simclr,
    # Supervised training on a pretrained encoder (one module, two modes).
    "linear_eval": classifier,
    "finetune": classifier,
}


def pretraining_methods() -> list[str]:
  """Methods whose checkpoints hold an encoder to evaluate or finetune."""
  return sorted(n for n, m in METHODS.items()
                if hasattr(m, "encoder_variables"))


def get_method(name: str) -> types.ModuleType:
  if name not in METHODS:
    raise ConfigError(
        f"config.method={name!r} is not a known method; "
        f"choose one of: {', '.join(sorted(METHODS))}")
  return METHODS[name]
