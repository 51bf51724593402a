"""The losses of the methods that decorrelate the dimensions of two views'
embeddings, without negatives or a predictor: Barlow Twins and VICReg.

Means and (co)variances are of the global batch, as the references'
SyncBatchNorm and gathers make them. Neither builds a [d, d] matrix: the
sum of squares of M = A^T B / k ([d, d], A and B [N, d]) is that of the
[N, N] product of the Grams, sum_pq (A A^T)_pq (B B^T)_pq / k^2, and its
diagonal is a column sum of A * B. With N < d (the references: N 2048,
d 8192) that is less work and memory, and each device computes only its
own rows of the Grams against the gathered batch (`all_gather`, whose
transpose hands each device its rows' gradient). The price: the
off-diagonal sum is a difference, which in float32 loses the digits of
(sum of squares) / (off-diagonal sum), about 2 of 7 for VICReg's
covariance once it is small (variances near 1 to 4, off-diagonal sums
/ d near 0.1); Barlow Twins' off-diagonal sum, of order d^2 / N, loses
none.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from contrastive_jax.losses.global_batch import (gather, global_count,
                                                 sum_over_devices)

# torch.nn.BatchNorm1d's default eps: Barlow Twins normalises z with
# `nn.BatchNorm1d(sizes[-1], affine=False)` (facebookresearch/barlowtwins
# main.py:205 @8e8d284).
_BARLOW_BN_EPS = 1e-5
# VICReg's std: sqrt(var + 0.0001) (facebookresearch/vicreg
# main_vicreg.py:205-206 @4e12602).
_VICREG_STD_EPS = 1e-4


def _global_mean(z: jax.Array, axis_name) -> jax.Array:
  n = global_count(z.shape[0], axis_name)
  return sum_over_devices(jnp.sum(z, axis=0), axis_name) / n


def _diagonal_and_off_diagonal(a: jax.Array, b: jax.Array, k, axis_name
                               ) -> tuple[jax.Array, jax.Array]:
  """(the diagonal of M = A^T B / k, sum_{i != j} M_ij^2) for A, B the
  global batch's [N, d] rows (`a`, `b` this device's), without forming M:
  sum_ij M_ij^2 = sum_pq (A A^T)_pq (B B^T)_pq / k^2 over the global rows
  p, q, each device summing over its own rows p."""
  diagonal = sum_over_devices(jnp.sum(a * b, axis=0), axis_name) / k
  grams = (a @ gather(a, axis_name).T) * (b @ gather(b, axis_name).T)
  square_sum = sum_over_devices(jnp.sum(grams), axis_name) / (k * k)
  return diagonal, square_sum - jnp.sum(jnp.square(diagonal))


class BarlowTwinsTerms(NamedTuple):
  loss: jax.Array        # on_diagonal + lambd * off_diagonal
  on_diagonal: jax.Array   # sum_i (1 - c_ii)^2
  off_diagonal: jax.Array  # sum_{i != j} c_ij^2


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, *, lambd: float,
                      axis_name: str | None = None) -> BarlowTwinsTerms:
  """Barlow Twins' loss of the global batch (Zbontar et al. 2021, eq. 1).

  Args:
    z1, z2: [n, d] projections of views 1 and 2 on this device.
    lambd: the weight of the off-diagonal terms.
    axis_name: mesh axis the global batch is split over, or None.

  Each dimension of z1 and of z2 is standardised over the N images of the
  global batch (mean 0, biased variance 1, eps 1e-5: a BatchNorm without
  affine parameters in training mode); c = bn(z1)^T bn(z2) / N, the local
  products summed over devices; loss = sum_i (1 - c_ii)^2 + lambd
  sum_{i != j} c_ij^2 (facebookresearch/barlowtwins main.py:211-220
  @8e8d284, which sums c over GPUs with `all_reduce` and normalises with a
  SyncBatchNorm, :89). The off-diagonal sum is the whole sum of squares
  less the diagonal's (module docstring), not a masked [d, d] matrix.
  """
  def standardise(z):
    z = z.astype(jnp.float32)
    centred = z - _global_mean(z, axis_name)
    var = _global_mean(jnp.square(centred), axis_name)
    return centred * jax.lax.rsqrt(var + _BARLOW_BN_EPS)

  n = global_count(z1.shape[0], axis_name)
  diagonal, off = _diagonal_and_off_diagonal(standardise(z1), standardise(z2),
                                             n, axis_name)
  on = jnp.sum(jnp.square(diagonal - 1.0))
  return BarlowTwinsTerms(loss=on + lambd * off, on_diagonal=on,
                          off_diagonal=off)


class VICRegTerms(NamedTuple):
  loss: jax.Array         # the weighted sum of the three terms below
  invariance: jax.Array   # mean squared difference of z1 and z2
  variance: jax.Array     # hinge on each dimension's std, mean of the views
  covariance: jax.Array   # off-diagonal covariances squared, / d, both views


def vicreg_loss(z1: jax.Array, z2: jax.Array, *, invariance_weight: float,
                variance_weight: float, covariance_weight: float,
                axis_name: str | None = None) -> VICRegTerms:
  """VICReg's loss of the global batch (Bardes et al. 2022, eq. 6), as
  facebookresearch/vicreg main_vicreg.py:194-220 @4e12602 computes it.

  Args:
    z1, z2: [n, d] projections of views 1 and 2 on this device.
    *_weight: the three terms' coefficients (the reference's sim, std and
      cov coefficients).
    axis_name: mesh axis the global batch is split over, or None.

  invariance: mean over the N x d entries of (z1 - z2)^2. The reference
    takes it on each GPU's own batch (`F.mse_loss(x, y)` before the
    gather); DDP's mean of the gradients makes that the global mean.
  variance: per view, mean over dimensions of relu(1 - sqrt(var + 1e-4)),
    var unbiased (/ (N - 1), torch's `var`) over the global batch; the
    two views averaged (`/ 2` each).
  covariance: per view, sum of the squared off-diagonal entries of the
    covariance of the global batch (/ (N - 1): `batch_size - 1`, the
    global batch) divided by d; the two views summed.
  The reference gathers the embeddings (FullGatherLayer, whose backward
  sums every GPU's gradient, then DDP averages): the gradient of these
  terms is that of the global-batch loss, as here.
  """
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
  n = global_count(z1.shape[0], axis_name)
  d = z1.shape[-1]
  invariance = sum_over_devices(jnp.sum(jnp.square(z1 - z2)),
                                axis_name) / (n * d)

  def variance_and_covariance(z):
    centred = z - _global_mean(z, axis_name)
    var, off = _diagonal_and_off_diagonal(centred, centred, n - 1, axis_name)
    std = jnp.sqrt(var + _VICREG_STD_EPS)
    return jnp.mean(jax.nn.relu(1.0 - std)), off / d

  var1, cov1 = variance_and_covariance(z1)
  var2, cov2 = variance_and_covariance(z2)
  variance = (var1 + var2) / 2
  covariance = cov1 + cov2
  loss = (invariance_weight * invariance + variance_weight * variance
          + covariance_weight * covariance)
  return VICRegTerms(loss=loss, invariance=invariance, variance=variance,
                     covariance=covariance)
