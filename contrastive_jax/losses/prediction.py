"""The losses of the methods that predict one view's projection from the
other's, without negatives: BYOL (two views, or multi-crop) and SimSiam."""

import jax
import jax.numpy as jnp

from contrastive_jax.losses.global_batch import (global_count, l2_normalize,
                                                 sum_over_devices)


# BYOL's l2_normalize clamps the squared norm at 1e-12 (deepmind-research
# byol/utils/helpers.py:74-82 @4822a45); ours clamps it at eps**2.
_BYOL_NORM_EPS = 1e-6


def byol_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array, *,
              axis_name: str | None = None) -> jax.Array:
  """BYOL's symmetrised regression loss of the global batch (Grill et al.
  2020, eq. 2 and its symmetrisation in §3.1).

  Args:
    p1, p2: [n, d] online predictions of views 1 and 2 on this device.
    z1, z2: [n, d] target projections of the same views; no gradient flows
      into them (stop_gradient here, as the reference's loss_fn).
    axis_name: mesh axis the global batch is split over, or None.

  Per image, ||n(p1) - n(z2)||^2 + ||n(p2) - n(z1)||^2 (each term 2 - 2 cos,
  computed as the reference's squared difference of unit vectors,
  helpers.py:109-112), averaged over the N images of the global batch: the
  reference's `jnp.mean(repr_loss)` per device followed by a pmean of the
  gradients (byol_experiment.py:243-250, :325 @4822a45). Its range is
  [0, 8]. A psum of local sums over the global N, so the gradients are
  global (module docstring).
  """
  def term(p, z):
    p = l2_normalize(p.astype(jnp.float32), eps=_BYOL_NORM_EPS)
    z = l2_normalize(jax.lax.stop_gradient(z.astype(jnp.float32)),
                     eps=_BYOL_NORM_EPS)
    return jnp.sum(jnp.square(p - z), axis=-1)

  local_sum = jnp.sum(term(p1, z2) + term(p2, z1))
  total = global_count(p1.shape[0], axis_name)
  return sum_over_devices(local_sum, axis_name) / total


def simsiam_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array,
                 *, axis_name: str | None = None) -> jax.Array:
  """SimSiam's symmetrised negative cosine similarity of the global batch
  (Chen & He 2021, eq. 1-3).

  Args:
    p1, p2: [n, d] predictions of views 1 and 2 on this device.
    z1, z2: [n, d] projections of the same views; stop-gradient here (the
      reference's `z1.detach()`, simsiam/builder.py:61 @a7bc177).
    axis_name: mesh axis the global batch is split over, or None.

  -(mean cos(p1, z2) + mean cos(p2, z1)) / 2 over the N images of the global
  batch (main_simsiam.py:295 @a7bc177; per-GPU means averaged by DDP's
  gradient all-reduce). Its range is [-1, 1]. torch's CosineSimilarity
  divides by max(|x| |y|, 1e-8); this normalises each vector with
  eps 1e-12, the same wherever a norm is not ~0.
  """
  def cos(p, z):
    p = l2_normalize(p.astype(jnp.float32))
    z = l2_normalize(jax.lax.stop_gradient(z.astype(jnp.float32)))
    return jnp.sum(p * z, axis=-1)

  local_sum = jnp.sum(cos(p1, z2) + cos(p2, z1))
  total = global_count(p1.shape[0], axis_name)
  return -0.5 * sum_over_devices(local_sum, axis_name) / total


def byol_multicrop_loss(predictions, targets, *,
                        axis_name: str | None = None) -> jax.Array:
  """BYOL's loss with more views than targets (multi-crop): the sum over
  target views t and every other view v of the global-batch mean of
  ||n(p_v) - n(sg z'_t)||^2 (2 - 2 cos), as solo-learn's multi-crop BYOL
  (vturrisi/solo-learn solo/methods/byol.py:186-190 @9187ea3: the momentum
  network sees only the large crops). With two views and two targets it is
  `byol_loss`.

  Args:
    predictions: online predictions p_v of every view, each [n, d].
    targets: target projections z'_t of the first len(targets) views.
  """
  def term_sum(p, z):
    p = l2_normalize(p.astype(jnp.float32), eps=_BYOL_NORM_EPS)
    z = l2_normalize(jax.lax.stop_gradient(z.astype(jnp.float32)),
                     eps=_BYOL_NORM_EPS)
    return jnp.sum(jnp.square(p - z))

  local_sum = sum(term_sum(p, z) for t, z in enumerate(targets)
                  for v, p in enumerate(predictions) if v != t)
  total = global_count(predictions[0].shape[0], axis_name)
  return sum_over_devices(local_sum, axis_name) / total
