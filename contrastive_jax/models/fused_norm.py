"""Training BatchNorm in the fewest memory passes, with its own VJP.

Left to autodiff, a training BatchNorm is several memory-bound passes over
the activation: the backward pass XLA is handed goes through the mean, the
variance and the normalisation separately, and reads the activation and its
cotangent more often than the arithmetic needs. Here the passes are written
out:

  forward   ONE reduction pass (sum x and sum x^2 together, a variadic
            reduce), one all-reduce of both for global BN, then the
            normalise + affine elementwise pass.
  backward  ONE reduction pass (sum dy and sum dy*x_hat together), one
            all-reduce of both for global BN, then the dx elementwise pass;
            d scale and d bias are those same sums.

That is 3 accesses per element forward (read, read, write) and 5 backward
(read dy, x; read dy, x, write dx): `benchmarks/flops.BN_TRAIN_ACCESSES`.
XLA:CPU's cost analysis of a bfloat16 ResNet training step counts about 53
bytes per conv-output element for flax's BatchNorms and 17.5 for these
(minimum 16); benchmarks/gpu_ablate.py measures it on a GPU.

Statistics are float32 whatever the compute dtype, the variance is flax's
default `use_fast_variance` (E[x^2] - E[x]^2, clipped at 0), and the
modules keep the fields, defaults, variable names and running-average
updates of `nn.BatchNorm` (`FusedBatchNorm`) and `norm.GroupBatchNorm`
(`norm.FusedGroupBatchNorm`, which runs `batch_norm_of`), so parameters and checkpoints move freely between
the implementations. The feature axis is the last one; `nn.BatchNorm`'s
`axis`, `axis_index_groups`, `mask` and `param_dtype` are not offered.

Being a custom VJP, the training path has no forward-mode derivative
(`jax.jvp` of it is unsupported), and the batch statistics it hands to the
running averages carry no gradient (flax's do, though no loss here reads
them).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def variadic_sums(a, b, axes):
  """(sum a, sum b) over `axes` as ONE variadic reduce: one pass over the
  operands by construction, rather than two sibling reductions that XLA
  may or may not fuse."""
  zero = jnp.zeros((), jnp.float32)
  return lax.reduce((a, b), (zero, zero),
                    lambda p, q: (p[0] + q[0], p[1] + q[1]), axes)


def sibling_sums(a, b, axes):
  """The same sums as two reductions of shared producers. XLA:GPU puts such
  siblings in one multi-output fusion (flax's statistics rely on it) and may
  emit better code for plain sums than for a variadic reduce; XLA:CPU runs
  them as separate passes, yet each is vectorised (faster than the variadic
  reduce in a CPU microbenchmark)."""
  return jnp.sum(a, axis=axes), jnp.sum(b, axis=axes)


# The two-sum reduction both passes use, looked up when traced:
# benchmarks/gpu_ablate.py swaps in `sibling_sums` to time the other form
# on a GPU, where which one XLA emits faster is a measurement.
two_sums = variadic_sums


def _all_reduce_pair(a, b, axis_name):
  """psum of both per-channel sums in ONE collective (stacked), the
  latency of a collective being what a small vector pays."""
  if axis_name is None:
    return a, b
  both = lax.psum(jnp.stack([a, b]), axis_name)
  return both[0], both[1]


def _reduced_axes(xg):
  """Every axis of a grouped (G, n, ..., C) array but the group and C."""
  return tuple(range(1, xg.ndim - 1))


def _count(xg, axis_name):
  """Elements behind each statistic: this group's, times the devices of
  `axis_name` (each holds an equal share of the global batch)."""
  count = 1
  for d in xg.shape[1:-1]:
    count *= d
  if axis_name is not None:
    count *= lax.axis_size(axis_name)
  return count


def _bcast(v, ndim):
  """(G, C) -> (G, 1, ..., 1, C), to broadcast against a grouped array."""
  return v.reshape(v.shape[:1] + (1,) * (ndim - 2) + v.shape[-1:])


def _forward(xg, scale, bias, axis_name, epsilon, out_dtype):
  """(y, (mean, var), residuals) of training BN on grouped `xg`."""
  x32 = xg.astype(jnp.float32)
  s1, s2 = two_sums(x32, x32 * x32, _reduced_axes(xg))
  s1, s2 = _all_reduce_pair(s1, s2, axis_name)
  count = _count(xg, axis_name)
  mean = s1 / count
  # E[x^2] - E[x]^2 can round below 0 (flax clips it the same way).
  var = jnp.maximum(0.0, s2 / count - mean * mean)
  inv = lax.rsqrt(var + epsilon)
  mul = inv * scale
  y = (x32 - _bcast(mean, xg.ndim)) * _bcast(mul, xg.ndim) + bias
  return y.astype(out_dtype), (mean, var), (xg, mean, inv, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _train_bn(xg, scale, bias, axis_name, epsilon, out_dtype):
  """Training BN of `xg` (G, n, ..., C), each group by its own statistics,
  those summed over `axis_name` too when set; returns (y, (mean, var)) with
  statistics of shape (G, C)."""
  y, stats, _ = _forward(xg, scale, bias, axis_name, epsilon, out_dtype)
  return y, stats


def _train_bn_fwd(xg, scale, bias, axis_name, epsilon, out_dtype):
  y, stats, residuals = _forward(xg, scale, bias, axis_name, epsilon,
                                 out_dtype)
  return (y, stats), residuals


def _train_bn_bwd(axis_name, epsilon, out_dtype, residuals, cotangents):
  """dx = scale * inv * (dy - mean(dy) - x_hat * mean(dy * x_hat)).

  The statistics' cotangents are ignored: the module stops their gradient.
  d scale and d bias are this device's sums: the parameters entered
  `_train_bn` varying (see `_vary_like`), so JAX sums them over devices.
  """
  del epsilon, out_dtype
  dy, _ = cotangents
  xg, mean, inv, scale = residuals
  ndim = xg.ndim
  dy32 = dy.astype(jnp.float32)
  x_hat = (xg.astype(jnp.float32) - _bcast(mean, ndim)) * _bcast(inv, ndim)
  sum_dy, sum_dy_xhat = two_sums(dy32, dy32 * x_hat, _reduced_axes(xg))
  d_scale, d_bias = jnp.sum(sum_dy_xhat, axis=0), jnp.sum(sum_dy, axis=0)
  sum_dy, sum_dy_xhat = _all_reduce_pair(sum_dy, sum_dy_xhat, axis_name)
  count = _count(xg, axis_name)
  dx = _bcast(inv * scale, ndim) * (
      dy32 - _bcast(sum_dy / count, ndim)
      - x_hat * _bcast(sum_dy_xhat / count, ndim))
  return dx.astype(xg.dtype), d_scale, d_bias


_train_bn.defvjp(_train_bn_fwd, _train_bn_bwd)


def _varying_axes(a) -> frozenset:
  """The shard_map axes `a` varies over (empty outside shard_map). The
  attribute is `manual_axis_type.varying` in jax 0.10 and `vma` in some
  other releases."""
  aval = jax.typeof(a)
  manual = getattr(aval, 'manual_axis_type', None)
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, 'vma', ()))


def _vary_like(v, x):
  """`v` marked varying over every shard_map axis `x` varies over.

  A custom VJP must return cotangents of its inputs' types, and d scale is a
  per-device sum: a replicated (invariant) scale would need it summed over
  devices inside the bwd. Cast to varying outside instead: JAX transposes
  the cast into that sum, as it does for flax's BatchNorm.
  """
  missing = tuple(sorted(_varying_axes(x) - _varying_axes(v)))
  if not missing:
    return v
  cast = getattr(lax, 'pcast', None)
  if cast is not None:
    return cast(v, missing, to='varying')
  return lax.pvary(v, missing)  # older JAX


def _out_dtype(dtype, x, use_affine: bool):
  """flax's rule: `dtype` when given, else x's promoted with the float32
  parameters (bfloat16 in, float32 out) when there are any."""
  if dtype is not None:
    return dtype
  return jnp.result_type(x, jnp.float32) if use_affine else x.dtype


def batch_norm_of(mdl, x, *, use_running_average: bool, groups: int,
                  stats_axis: str | None, running_axis: str | None):
  """The body of `FusedBatchNorm` and `norm.FusedGroupBatchNorm`; creates
  `mdl`'s variables.

  stats_axis: the axis whose devices share the batch statistics (global
  BN). running_axis: the axis over which the running averages alone are
  averaged (per-device BN), keeping them replicated.
  """
  features = x.shape[-1]
  ra_mean = mdl.variable('batch_stats', 'mean',
                         lambda: jnp.zeros((features,), jnp.float32))
  ra_var = mdl.variable('batch_stats', 'var',
                        lambda: jnp.ones((features,), jnp.float32))
  scale = (mdl.param('scale', mdl.scale_init, (features,), jnp.float32)
           if mdl.use_scale else jnp.ones((features,), jnp.float32))
  bias = (mdl.param('bias', mdl.bias_init, (features,), jnp.float32)
          if mdl.use_bias else jnp.zeros((features,), jnp.float32))
  out_dtype = _out_dtype(mdl.dtype, x, mdl.use_scale or mdl.use_bias)
  if use_running_average:
    # A per-channel affine: XLA fuses it into its neighbours; autodiff is
    # already minimal.
    mul = lax.rsqrt(ra_var.value + mdl.epsilon) * scale
    y = (x.astype(jnp.float32) - ra_mean.value) * mul + bias
    return y.astype(out_dtype)
  n = x.shape[0]
  if n % groups:
    raise ValueError(f'{type(mdl).__name__}: a batch of {n} does not split '
                     f'into {groups} groups')
  # Splitting the leading (batch) axis is a bitcast in any layout.
  xg = x.reshape((groups, n // groups) + x.shape[1:])
  initializing = mdl.is_initializing()
  # As flax: init may run outside the mapped axis; nothing is averaged then.
  axis = None if initializing else stats_axis
  y, (mean, var) = _train_bn(xg, _vary_like(scale, x), _vary_like(bias, x),
                             axis, float(mdl.epsilon), out_dtype)
  if not initializing:
    mean, var = lax.stop_gradient((jnp.mean(mean, axis=0),
                                   jnp.mean(var, axis=0)))
    if running_axis is not None:
      mean, var = lax.pmean((mean, var), running_axis)
    m = mdl.momentum
    ra_mean.value = m * ra_mean.value + (1 - m) * mean
    ra_var.value = m * ra_var.value + (1 - m) * var
  return y.reshape(x.shape)


class FusedBatchNorm(nn.Module):
  """`nn.BatchNorm` (feature axis last) with the minimal-pass training path.

  Same fields and defaults as flax's; `axis_name` set: global BN, the
  statistics of all devices of that mapped axis.
  """
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Callable = nn.initializers.zeros
  scale_init: Callable = nn.initializers.ones
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average)
    return batch_norm_of(self, x, use_running_average=use_running_average,
                       groups=1, stats_axis=self.axis_name, running_axis=None)
