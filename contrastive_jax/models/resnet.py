"""ResNet encoders (v1.5) that return the pooled representation `h`.

The contrastive methods never use a classifier: the encoder ends at global
average pooling, and heads/linear probes live elsewhere.

Naming is part of the contract. Every BatchNorm module's name starts with
`bn` (`stem_bn`, `bn1`, `proj_bn`), and every convolution is named `*conv*`,
so `contrastive_jax.weight_decay.decay_mask` can tell BN parameters from
kernels by their path alone; `contrastive_jax.export` maps these names (stem_*,
stage{i}_block{j}, proj_*) to torchvision's, so renaming one breaks exports.
"""

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from contrastive_jax.models import input_norm
from contrastive_jax.models.norm import batch_norm

ModuleDef = Any

# Convolution kernel initialisers, by the reference whose ResNet they follow.
#  'simclr': TF's `variance_scaling_initializer()` defaults (scale 1, fan_in,
#    truncated normal; std sqrt(1/fan_in) after flax's and TF's truncation
#    correction): google-research/simclr resnet.py:276 (tf2/resnet.py:202).
#  'torchvision': `kaiming_normal_(mode='fan_out', nonlinearity='relu')`,
#    i.e. std sqrt(2/fan_out), untruncated: torchvision's ResNet, which MoCo
#    builds its encoders from (facebookresearch/moco moco/builder.py:26-27
#    @90e244a).
CONV_INITS = {
    'simclr': nn.initializers.variance_scaling(
        1.0, 'fan_in', 'truncated_normal'),
    'torchvision': nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'),
}

# Explicit, symmetric padding for every 3x3 conv, as torchvision's
# `padding=1`. Flax's 'SAME' pads a stride-2 3x3 conv of an even-sized input
# (0, 1) - bottom/right only - so its sampling grid sat one pixel off
# torchvision's, and exported weights computed something else in PyTorch.
# Output sizes are the same either way; 1x1 convs pad nothing.
PAD_3X3 = ((1, 1), (1, 1))


class BasicBlock(nn.Module):
  """Two 3x3 convolutions; used by ResNet-18/34."""
  # Output channels = filters * expansion.
  expansion: ClassVar[int] = 1

  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  zero_init_residual: bool = True

  @nn.compact
  def __call__(self, x):
    out_channels = self.filters * self.expansion
    y = self.conv(self.filters, (3, 3), self.strides, padding=PAD_3X3,
                  name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(out_channels, (3, 3), padding=PAD_3X3, name='conv2')(y)
    y = self.norm(scale_init=_last_bn_scale_init(self), name='bn2')(y)
    return nn.relu(y + _shortcut(self, x, out_channels))


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, as in v1.5) -> 1x1; used by ResNet-50/101/152."""
  expansion: ClassVar[int] = 4

  filters: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  zero_init_residual: bool = True

  @nn.compact
  def __call__(self, x):
    out_channels = self.filters * self.expansion
    y = self.conv(self.filters, (1, 1), padding=0, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.filters, (3, 3), self.strides, padding=PAD_3X3,
                  name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(out_channels, (1, 1), padding=0, name='conv3')(y)
    y = self.norm(scale_init=_last_bn_scale_init(self), name='bn3')(y)
    return nn.relu(y + _shortcut(self, x, out_channels))


def _last_bn_scale_init(block):
  # Zero scale makes each block start as the identity (Goyal et al. 2017),
  # as SimCLR does (resnet.py:395 and :480, `init_zero=True`); torchvision,
  # hence MoCo, keeps gamma = 1 (`zero_init_residual=False` by default).
  if block.zero_init_residual:
    return nn.initializers.zeros
  return nn.initializers.ones


def _shortcut(block, x, out_channels):
  """Identity, or a strided 1x1 projection when the shape changes."""
  if x.shape[-1] == out_channels and block.strides == 1:
    return x
  x = block.conv(out_channels, (1, 1), block.strides, padding=0,
                 name='proj_conv')(x)
  return block.norm(name='proj_bn')(x)


class ResNet(nn.Module):
  """ResNet trunk: stem, residual stages, global average pool.

  Attributes:
    stage_sizes: number of blocks in each stage; stage i has
      `num_filters * 2**i * width_multiplier` filters and stride 2 (except i=0).
    block_cls: `BasicBlock` or `BottleneckBlock`.
    width_multiplier: channel multiplier k of SimCLR's ResNet-50 (kx); scales
      the stem too, so the feature dim is k times the standard one.
    num_filters: stem / first-stage width before the multiplier.
    cifar_stem: 3x3 stride-1 stem without max-pool, for 32px images (SimCLR's
      CIFAR setup); otherwise the 7x7 stride-2 conv + 3x3 stride-2 max-pool.
    dtype: computation dtype; parameters stay float32 and the output `h` is
      always float32.
    bn_axis_name: when set, BatchNorm averages its batch statistics over this
      mapped axis (e.g. 'data' inside `jax.shard_map`), i.e. global BN.
    bn_groups: None for the BN above. An int G instead normalises each of G
      groups of this device's batch by its own statistics (MoCo's per-GPU BN;
      see models/norm.py); `bn_axis_name` then only averages the running
      statistics, keeping them replicated.
    bn_momentum: flax convention, the decay of the running average (0.9 here
      is torch's momentum=0.1).
    bn_epsilon: BatchNorm epsilon.
    bn_impl: a key of `norm.BN_IMPLS`: 'flax' (flax's modules) or 'fused'
      (models/fused_norm.py: the same BatchNorm, same variables, whose
      training passes are written out with their own VJP).
    conv_init: a key of `CONV_INITS`: whose convolution init to follow.
    zero_init_residual: zero gamma in the last BN of each residual block
      (SimCLR) or one (torchvision/MoCo).
    input_norm: a key of `input_norm.INPUT_NORMS`: the mean/std normalisation applied
      to the [0, 1] input images first.
  """
  stage_sizes: Sequence[int]
  block_cls: type[nn.Module]
  width_multiplier: int = 1
  num_filters: int = 64
  cifar_stem: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  bn_groups: int | None = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_impl: str = 'flax'
  conv_init: str = 'simclr'
  zero_init_residual: bool = True
  input_norm: str = 'none'

  @property
  def feature_dim(self) -> int:
    """Size of the representation `h` returned by `__call__`."""
    last_stage_filters = self.num_filters * 2 ** (len(self.stage_sizes) - 1)
    return last_stage_filters * self.width_multiplier * self.block_cls.expansion

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(
        nn.Conv, use_bias=False, dtype=self.dtype,
        kernel_init=CONV_INITS[self.conv_init])
    x = input_norm.normalize(x, self.input_norm)
    norm = batch_norm(
        train=train, groups=self.bn_groups, axis_name=self.bn_axis_name,
        momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype,
        impl=self.bn_impl)
    width = self.num_filters * self.width_multiplier

    if self.cifar_stem:
      x = conv(width, (3, 3), padding=PAD_3X3, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
    else:
      x = conv(width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
               name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(
            filters=width * 2 ** i, strides=strides, conv=conv, norm=norm,
            zero_init_residual=self.zero_init_residual,
            name=f'stage{i + 1}_block{j + 1}')(x)

    # Pool in float32: a bf16 mean over 49+ positions loses precision that the
    # contrastive loss (a temperature-scaled cosine) is sensitive to.
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


ResNet18 = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckBlock)
ResNet101 = functools.partial(
    ResNet, stage_sizes=(3, 4, 23, 3), block_cls=BottleneckBlock)
ResNet152 = functools.partial(
    ResNet, stage_sizes=(3, 8, 36, 3), block_cls=BottleneckBlock)
# For tests only: two stages so the strided projection shortcut is exercised,
# yet cheap enough for XLA:CPU at 16-32px.
TinyResNet = functools.partial(
    ResNet, stage_sizes=(1, 1), block_cls=BasicBlock, num_filters=8)
# The small-data recipes' encoder (configs/*.py:small): three stages of one
# basic block, 16-32-64 filters (x width), so that at 32 px the last stage
# sees the whole image on an 8x8 grid, at about 1.4x the cost of TinyResNet
# x2 (BENCHMARKS.md, "Small data").
SmallResNet = functools.partial(
    ResNet, stage_sizes=(1, 1, 1), block_cls=BasicBlock, num_filters=16)
