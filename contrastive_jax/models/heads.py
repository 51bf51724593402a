"""Projection head g(h) -> z on which the contrastive loss is computed.

Module names follow the same rule as the ResNet (BatchNorm names start with
`bn`), so `contrastive_jax.weight_decay.decay_mask` recognises them by
path.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from contrastive_jax.errors import ConfigError
from contrastive_jax.models import vit
from contrastive_jax.models.norm import batch_norm

DENSE_INITS = ('flax', 'torch_linear')


def torch_linear_init(fan_in: int):
  """PyTorch's default `nn.Linear` init of a layer with `fan_in` inputs, as
  a flax initializer for both the kernel and the bias: U(-b, b) with b =
  1/sqrt(fan_in). `Linear.reset_parameters`: `kaiming_uniform_(weight,
  a=sqrt(5))`, whose bound gain*sqrt(3/fan_in) with gain sqrt(2/(1+5)) is
  1/sqrt(fan_in), and the bias uniform within the same 1/sqrt(fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class _MLPHead(nn.Module):
  """What ProjectionHead and DINOHead share: `num_layers` Dense layers
  (checked >= 1), an optional BatchNorm after each hidden one, and its
  fields.

  Attributes:
    num_layers: total number of Dense layers, >= 1.
    use_bn: BatchNorm after the Dense layers (each head says which).
    bn_axis_name: mapped axis to average BN statistics over (global BN).
    bn_momentum: flax convention (decay of the running average; torch's
      BatchNorm1d momentum 0.1 is flax's 0.9).
    bn_epsilon: BatchNorm epsilon.
    dtype: computation dtype; params and the head's output are float32.
  """
  num_layers: int = 2
  use_bn: bool = False
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  def _check_num_layers(self):
    if self.num_layers < 1:
      raise ConfigError(
          f'head.num_layers must be an integer >= 1; got {self.num_layers}')

  def _batch_norm(self, train: bool, groups: int | None = None):
    """The heads' BatchNorm constructor (call it with `name=`)."""
    return batch_norm(
        train=train, groups=groups, axis_name=self.bn_axis_name,
        momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype)


class ProjectionHead(_MLPHead):
  """MLP projection head covering the SimCLR v1/v2 and MoCo v1/v2 variants.

  Layers `dense1 .. dense{num_layers-1}` are hidden: Dense -> (BN) -> ReLU.
  The last layer `dense{num_layers}` is a Dense with no ReLU (bias only with
  `output_bias`).
  - num_layers=1: linear projection (MoCo v1; `output_bias` for torchvision's
    `fc`).
  - num_layers=2, use_bn=False: MoCo v2.
  - use_bn=True: the official SimCLR head, v1 with num_layers=2
    (`model_util.projection_head` at the first commit) and v2 with
    num_layers=3 (`tf2/model.py` `ProjectionHead`): every Dense is followed by
    a BN, so the Dense layers have no bias (the BN subtracts it anyway); the
    hidden BNs (`bn1`, ...) have scale and centre, the output BN (`bn_out`)
    scale only (`linear_layer(..., use_bias=False, use_bn=True)` there is
    `batch_norm_relu(relu=False, center=False)`).

  Attributes (and `_MLPHead`'s: num_layers, use_bn, bn_axis_name,
  bn_momentum, bn_epsilon, dtype):
    hidden_dim: width of the hidden layers; None means the input width.
    output_dim: size of z.
    use_bn: BatchNorm after every Dense (the SimCLR reference head).
    output_bias: a bias on the last Dense (torchvision's `fc` has one). Not
      with use_bn: the output BN's mean subtraction would cancel it.
    hidden_bias: a bias on each hidden Dense; None (default): only without
      BN. True with use_bn: VICReg's projector (`nn.Linear(f[i], f[i + 1])`
      before each BatchNorm1d, facebookresearch/vicreg main_vicreg.py:228
      @4e12602) and solo-learn's; the BN cancels it in training, its running
      mean follows it.
    output_bn: with use_bn, whether the last Dense is followed by a BN too
      (`bn_out`; SimCLR's heads). BYOL's projector and predictor have BN on
      the hidden layer only (deepmind-research byol/utils/networks.py:40-45
      @4822a45).
    output_bn_scale: whether the output BN has a learned scale (SimCLR's
      does); False: no affine parameters at all, as SimSiam's projector
      (`BatchNorm1d(dim, affine=False)`, facebookresearch/simsiam
      simsiam/builder.py:35 @a7bc177) and MoCo v3's MLPs.
    dense_init: 'flax': flax's Dense defaults, LeCun normal kernels and
      zero biases (or `kernel_init_stddev`); 'torch_linear': PyTorch's
      default `nn.Linear` init, kernel and bias U(+-1/sqrt(fan_in))
      (`torch_linear_init`; the MoCo references' torchvision heads).
    kernel_init_stddev: with dense_init='flax': None: LeCun normal; else
      Dense kernels drawn from N(0, stddev^2) (the SimCLR reference: 0.01).
    bn_groups: None, or per-group BN as in `ResNet.bn_groups`.
  """
  hidden_dim: int | None = None
  output_dim: int = 128
  output_bias: bool = False
  hidden_bias: bool | None = None
  output_bn: bool = True
  output_bn_scale: bool = True
  dense_init: str = 'flax'
  kernel_init_stddev: float | None = None
  bn_groups: int | None = None

  @nn.compact
  def __call__(self, h, train: bool):
    self._check_num_layers()
    if self.output_bias and self.use_bn and self.output_bn:
      raise ConfigError(
          'head.output_bias must be False with head.use_bn: the output '
          'BatchNorm subtracts the batch mean, which cancels the bias')
    if self.dense_init not in DENSE_INITS:
      raise ConfigError(f'head.dense_init must be one of '
                        f'{", ".join(DENSE_INITS)}; got {self.dense_init!r}')
    if (self.dense_init == 'torch_linear' and
        self.kernel_init_stddev is not None):
      raise ConfigError("head.kernel_init_stddev is for head.dense_init="
                        "'flax'; 'torch_linear' fixes the kernel init")
    hidden_dim = self.hidden_dim or h.shape[-1]

    def dense_kwargs(fan_in):
      if self.dense_init == 'torch_linear':
        init = torch_linear_init(fan_in)
        return dict(kernel_init=init, bias_init=init)
      if self.kernel_init_stddev is not None:
        return dict(kernel_init=nn.initializers.normal(
            self.kernel_init_stddev))
      return {}
    norm = self._batch_norm(train, self.bn_groups)

    hidden_bias = (not self.use_bn if self.hidden_bias is None
                   else self.hidden_bias)
    x = h
    for i in range(1, self.num_layers):
      x = nn.Dense(hidden_dim, use_bias=hidden_bias, dtype=self.dtype,
                   name=f'dense{i}', **dense_kwargs(x.shape[-1]))(x)
      if self.use_bn:
        x = norm(name=f'bn{i}')(x)
      x = nn.relu(x)
    # No bias on the output by default: the loss normalises z, and in the BN
    # variant the batch mean would cancel it.
    x = nn.Dense(self.output_dim, use_bias=self.output_bias, dtype=self.dtype,
                 name=f'dense{self.num_layers}',
                 **dense_kwargs(x.shape[-1]))(x)
    if self.use_bn and self.output_bn:
      x = norm(use_bias=False, use_scale=self.output_bn_scale,
               name='bn_out')(x)
    return x.astype(jnp.float32)



class WeightNormDense(nn.Module):
  """torch's `weight_norm(nn.Linear(in, features, bias=False))`: y = x W,
  W[:, o] = g_o v[:, o] / |v[:, o]| (one norm per output unit: dim 0 of
  torch's [out, in] weight). `v` is `kernel` [in, features], torch's
  nn.Linear default init U(+-1/sqrt(in)); `fixed_gain`: g = 1, no
  parameter; else `gain` [1, features], initialised to 1."""
  features: int
  fixed_gain: bool = True

  @nn.compact
  def __call__(self, x):
    v = self.param('kernel', torch_linear_init(x.shape[-1]),
                   (x.shape[-1], self.features))
    w = v * jax.lax.rsqrt(jnp.sum(v * v, axis=0, keepdims=True))
    if not self.fixed_gain:
      w = w * self.param('gain', nn.initializers.ones, (1, self.features))
    return x @ w


class DINOHead(_MLPHead):
  """DINO's projection head (facebookresearch/dino vision_transformer.py:
  257-291 @7c446df): an MLP `dense1 .. dense{num_layers}` (hidden layers
  Dense -> (BN) -> exact GELU, the last to `bottleneck_dim`), its output
  l2-normalised (F.normalize, eps 1e-12), then `last_layer`, a
  weight-normalised Dense without bias to `output_dim` (`WeightNormDense`).

  `norm_last_layer=True` fixes the gain at 1 (`weight_g.requires_grad =
  False`, :277-279): no gain parameter at all. False: a trainable
  `last_layer/gain` [1, output_dim] from 1 (:277), 2-D as torch's [out, 1]
  `weight_g`, so DINO's decay rule (utils.py:632-643: not biases, not 1-D)
  decays it.

  Init (:275, :281-285): the MLP's Dense kernels N(0, 0.02^2) (DINO's
  `trunc_normal_(std=.02)` truncates at +-2 in absolute value, i.e. 100
  std: no truncation in effect; flax's `truncated_normal` would cut at 2
  std), biases zero; `last_layer`'s v keeps torch's nn.Linear default (it
  is built after `self.apply(_init_weights)`, :276). float32 from the
  bottleneck on: the normalisation and the 65,536 logits the softmaxes see.
  """
  output_dim: int = 65536
  num_layers: int = 3
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  norm_last_layer: bool = True

  @nn.compact
  def __call__(self, h, train: bool):
    self._check_num_layers()
    dense = functools.partial(
        nn.Dense, kernel_init=nn.initializers.normal(0.02),
        bias_init=nn.initializers.zeros, dtype=self.dtype)
    x = h
    for i in range(1, self.num_layers):
      x = dense(self.hidden_dim, name=f'dense{i}')(x)
      if self.use_bn:
        x = self._batch_norm(train)(name=f'bn{i}')(x)
      x = vit.gelu(x)
    x = dense(self.bottleneck_dim, name=f'dense{self.num_layers}')(x)
    x = x.astype(jnp.float32)
    # F.normalize: x / max(|x|, 1e-12).
    x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True),
                                      1e-24))
    return WeightNormDense(self.output_dim, fixed_gain=self.norm_last_layer,
                           name='last_layer')(x)
