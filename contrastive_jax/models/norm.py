"""BatchNorm for the encoders: global (synchronised) or per group.

SimCLR normalises with statistics of the whole global batch (flax's
`nn.BatchNorm` with `axis_name`). MoCo's reference normalises each GPU's batch
with its own statistics, and its shuffle-BN relies on that. `GroupBatchNorm`
reproduces per-device BN inside `shard_map` and, by splitting a device's batch
into several groups, on a single device too, so one device with G groups
computes exactly what G devices with one group each compute.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from contrastive_jax.models import fused_norm

# `batch_norm`'s implementations: flax's modules (autodiff's backward pass),
# or models/fused_norm.py's (the minimal memory passes, its own VJP).
BN_IMPLS = ('flax', 'fused')


class GroupBatchNorm(nn.Module):
  """BatchNorm whose batch statistics are taken per group of examples.

  In training the leading axis (this device's batch, of size n) is split into
  `num_groups` consecutive groups of n / num_groups examples; each group is
  normalised by its own mean and (biased) variance. The running averages are
  updated with the mean of the group statistics over the groups and, given
  `axis_name`, over the devices of that mapped axis: that keeps them identical
  on every device (a replicated state) and makes them the same whether the
  groups sit on one device or on many.

  Variables are named as in `nn.BatchNorm` (params `scale`, `bias`;
  batch_stats `mean`, `var`), so parameters move freely between the two.
  """
  use_running_average: bool = False
  num_groups: int = 1
  axis_name: str | None = None
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean',
                            lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var',
                           lambda: jnp.ones((features,), jnp.float32))
    # Statistics in float32 whatever the compute dtype, as flax does.
    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      y = (x32 - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
    else:
      n = x.shape[0]
      if n % self.num_groups:
        raise ValueError(
            f'GroupBatchNorm: a batch of {n} does not split into '
            f'{self.num_groups} groups')
      grouped = x32.reshape((self.num_groups, n // self.num_groups)
                            + x.shape[1:])
      axes = tuple(range(1, grouped.ndim - 1))
      mean = jnp.mean(grouped, axis=axes, keepdims=True)
      var = jnp.mean(jnp.square(grouped - mean), axis=axes, keepdims=True)
      y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(
          x.shape)
      if not self.is_initializing():
        batch_mean = jnp.mean(mean.reshape(-1, features), axis=0)
        batch_var = jnp.mean(var.reshape(-1, features), axis=0)
        if self.axis_name is not None:
          batch_mean, batch_var = jax.lax.pmean((batch_mean, batch_var),
                                                self.axis_name)
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * batch_mean
        ra_var.value = m * ra_var.value + (1 - m) * batch_var
    if self.use_scale:
      y = y * self.param('scale', self.scale_init, (features,), jnp.float32)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (features,), jnp.float32)
    return y.astype(self.dtype)


class FusedGroupBatchNorm(GroupBatchNorm):
  """`GroupBatchNorm` (same fields, defaults and variables) whose training
  statistics and their gradient take the minimal memory passes
  (fused_norm.py)."""

  @nn.compact
  def __call__(self, x):
    return fused_norm.batch_norm_of(
        self, x, use_running_average=self.use_running_average,
        groups=self.num_groups, stats_axis=None, running_axis=self.axis_name)


def batch_norm(*, train: bool, groups: int | None, axis_name: str | None,
               momentum: float, epsilon: float, dtype: Any,
               impl: str = 'flax'):
  """A BatchNorm constructor (call it with `name=`, `scale_init=`, ...).

  groups=None: `nn.BatchNorm`, its statistics averaged over `axis_name`
  (global BN when set). groups=G: `GroupBatchNorm` with G groups per device,
  `axis_name` only keeping the running averages replicated. impl='fused':
  the same BatchNorm from models/fused_norm.py (same variables, same
  numbers to float32 rounding, fewer memory passes in training).
  """
  if impl not in BN_IMPLS:
    raise ValueError(f'batch_norm: impl must be one of {", ".join(BN_IMPLS)}; '
                     f'got {impl!r}')
  fused = impl == 'fused'
  if groups is None:
    return functools.partial(
        fused_norm.FusedBatchNorm if fused else nn.BatchNorm,
        use_running_average=not train, momentum=momentum, epsilon=epsilon,
        dtype=dtype, axis_name=axis_name)
  return functools.partial(
      FusedGroupBatchNorm if fused else GroupBatchNorm,
      use_running_average=not train, num_groups=groups, axis_name=axis_name,
      momentum=momentum, epsilon=epsilon, dtype=dtype)
