"""Projection head g(h) -> z on which the contrastive loss is computed.

Module names follow the same rule as the ResNet (BatchNorm names start with
`bn`), so `contrastive_jax.optim.decay_mask` recognises them by path.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from contrastive_jax.errors import ConfigError
from contrastive_jax.models.norm import batch_norm


class ProjectionHead(nn.Module):
  """MLP projection head covering the SimCLR v1/v2 and MoCo v1/v2 variants.

  Layers `dense1 .. dense{num_layers-1}` are hidden: Dense -> (BN) -> ReLU.
  The last layer `dense{num_layers}` is a bias-free Dense with no ReLU.
  - num_layers=1: linear projection (MoCo v1).
  - num_layers=2, use_bn=False: SimCLR v1 / MoCo v2.
  - num_layers=3, use_bn=True: SimCLR v2. Hidden Dense layers then drop their
    bias (the BN that follows subtracts it anyway) and the output goes through
    a BN with scale but no learnable center (`bn_out`).

  Attributes:
    num_layers: total number of Dense layers, >= 1.
    hidden_dim: width of the hidden layers; None means the input width.
    output_dim: size of z.
    use_bn: BatchNorm after every Dense (SimCLR v2).
    bn_axis_name: mapped axis to average BN statistics over (global BN).
    bn_groups: None, or per-group BN as in `ResNet.bn_groups`.
    bn_momentum: flax convention (decay of the running average).
    bn_epsilon: BatchNorm epsilon.
    dtype: computation dtype; params and the returned z are float32.
  """
  num_layers: int = 2
  hidden_dim: int | None = None
  output_dim: int = 128
  use_bn: bool = False
  bn_axis_name: str | None = None
  bn_groups: int | None = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool):
    if self.num_layers < 1:
      raise ConfigError(
          f'head.num_layers must be an integer >= 1; got {self.num_layers}')
    hidden_dim = self.hidden_dim or h.shape[-1]
    norm = batch_norm(
        train=train, groups=self.bn_groups, axis_name=self.bn_axis_name,
        momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype)

    x = h
    for i in range(1, self.num_layers):
      x = nn.Dense(hidden_dim, use_bias=not self.use_bn, dtype=self.dtype,
                   name=f'dense{i}')(x)
      if self.use_bn:
        x = norm(name=f'bn{i}')(x)
      x = nn.relu(x)
    # No bias on the output: the loss normalises z, and in the BN variant the
    # BN centre would cancel it.
    x = nn.Dense(self.output_dim, use_bias=False, dtype=self.dtype,
                 name=f'dense{self.num_layers}')(x)
    if self.use_bn:
      x = norm(use_bias=False, name='bn_out')(x)
    return x.astype(jnp.float32)
