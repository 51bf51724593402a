"""Encoders by name, and the projection head."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from contrastive_jax.errors import ConfigError
from contrastive_jax.models import resnet
from contrastive_jax.models.heads import ProjectionHead

# Config name -> constructor taking ResNet's keyword fields.
ENCODERS = {
    'resnet18': resnet.ResNet18,
    'resnet34': resnet.ResNet34,
    'resnet50': resnet.ResNet50,
    'resnet101': resnet.ResNet101,
    'resnet152': resnet.ResNet152,
    'tiny_resnet': resnet.TinyResNet,
}

WIDTH_MULTIPLIERS = (1, 2, 4)


def create_encoder(
    name: str,
    *,
    width_multiplier: int = 1,
    cifar_stem: bool = False,
    dtype: Any = jnp.float32,
    bn_axis_name: str | None = None,
    bn_groups: int | None = None,
) -> nn.Module:
  """Builds the encoder called `name`; its `feature_dim` is the size of h.

  `bn_axis_name` and `bn_groups` choose the BatchNorm (see `ResNet`).
  """
  if name not in ENCODERS:
    raise ConfigError(
        f'model must be one of {", ".join(ENCODERS)}; got {name!r}')
  # `in` alone would accept True (== 1).
  if (isinstance(width_multiplier, bool)
      or width_multiplier not in WIDTH_MULTIPLIERS):
    raise ConfigError(
        f'width_multiplier must be one of '
        f'{", ".join(map(str, WIDTH_MULTIPLIERS))}; got {width_multiplier!r}')
  return ENCODERS[name](
      width_multiplier=int(width_multiplier), cifar_stem=cifar_stem,
      dtype=dtype, bn_axis_name=bn_axis_name, bn_groups=bn_groups)


__all__ = ['ENCODERS', 'ProjectionHead', 'create_encoder']
