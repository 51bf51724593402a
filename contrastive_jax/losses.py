"""Contrastive losses.

Every loss takes per-device arrays and, given `axis_name`, is meant to run
inside `jax.shard_map` over that mesh axis. It then returns the loss of the
whole global batch, identical on every device.

Gradients under `shard_map` (with the default `check_vma=True`): the returned
value is a `psum`, whose transpose hands every device the cotangent 1, and
`all_gather`'s transpose is a reduce-scatter, so each device receives the full
gradient w.r.t. its own embeddings from every other device's anchors. A
parameter that enters the step replicated gets its gradient summed over
devices by JAX itself: callers must NOT add a `psum`/`pmean` of the grads.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  # rsqrt of a clamped squared norm: finite for an all-zero row, unlike x/|x|.
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


class NTXentOutput(NamedTuple):
  loss: jax.Array      # scalar: mean over all 2N anchors of the global batch
  accuracy: jax.Array  # scalar: fraction of anchors whose positive wins


def _global_offset(local_n: int, axis_name) -> jax.Array:
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return jax.lax.axis_index(axis_name) * local_n


def _gather(x: jax.Array, axis_name) -> jax.Array:
  if axis_name is None:
    return x
  # Negatives come from every device; gradients flow back through the
  # gather (its transpose is a reduce-scatter).
  return jax.lax.all_gather(x, axis_name, tiled=True)


def _sum_over_devices(x: jax.Array, axis_name) -> jax.Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def nt_xent_with_accuracy(z_a: jax.Array, z_b: jax.Array, *,
                          temperature: float,
                          axis_name: str | None = None) -> NTXentOutput:
  """NT-Xent (SimCLR, Chen et al. 2020, eq. 1) and the contrastive accuracy.

  Args:
    z_a, z_b: [n, d] projections of the two views of the same n images on
      this device (row i of z_a and row i of z_b are a positive pair).
    temperature: tau > 0.
    axis_name: mesh axis the global batch is split over, or None.

  Each device scores its 2n local anchors against the 2N global candidates
  (the gathered embeddings): memory is O(local rows x global columns); the
  global 2N x 2N matrix never exists anywhere.
  """
  n = z_a.shape[0]
  # Cosine similarity in float32 whatever the compute dtype: the softmax
  # over thousands of logits needs the mantissa.
  a = l2_normalize(z_a.astype(jnp.float32))
  b = l2_normalize(z_b.astype(jnp.float32))
  all_a = _gather(a, axis_name)            # [N, d]
  all_b = _gather(b, axis_name)            # [N, d]
  big_n = all_a.shape[0]
  anchors = jnp.concatenate([a, b], axis=0)            # [2n, d]
  candidates = jnp.concatenate([all_a, all_b], axis=0)  # [2N, d]
  logits = anchors @ candidates.T / temperature        # [2n, 2N]

  # Global column of each local anchor's own embedding, and of its positive.
  rows = jnp.arange(n) + _global_offset(n, axis_name)
  self_col = jnp.concatenate([rows, rows + big_n])
  pos_col = jnp.concatenate([rows + big_n, rows])

  cols = jnp.arange(2 * big_n)
  is_self = cols[None, :] == self_col[:, None]
  # Drop self-similarity with a finite, dtype-safe value (never mask*1e9,
  # which overflows in half precision): logits are bounded by 1/tau, so
  # the dtype's most negative value underflows exp() to exactly 0.
  logits = jnp.where(is_self, jnp.finfo(logits.dtype).min, logits)

  log_norm = jax.nn.logsumexp(logits, axis=-1)
  pos_logit = jnp.take_along_axis(logits, pos_col[:, None], axis=-1)[:, 0]
  local_sum = jnp.sum(log_norm - pos_logit)
  hits = jnp.sum(jnp.argmax(logits, axis=-1) == pos_col)

  total = 2 * big_n
  loss = _sum_over_devices(local_sum, axis_name) / total
  accuracy = _sum_over_devices(hits.astype(jnp.float32), axis_name) / total
  return NTXentOutput(loss=loss, accuracy=accuracy)


def nt_xent(z_a: jax.Array, z_b: jax.Array, *, temperature: float,
            axis_name: str | None = None) -> jax.Array:
  """The NT-Xent loss of the global batch (see `nt_xent_with_accuracy`)."""
  return nt_xent_with_accuracy(z_a, z_b, temperature=temperature,
                               axis_name=axis_name).loss


class InfoNCEOutput(NamedTuple):
  loss: jax.Array      # scalar: mean over the N queries of the global batch
  accuracy: jax.Array  # scalar: fraction of queries whose positive wins


def info_nce_with_accuracy(q: jax.Array, k: jax.Array, queue: jax.Array, *,
                           temperature: float,
                           axis_name: str | None = None) -> InfoNCEOutput:
  """InfoNCE against a queue of negatives (MoCo, He et al. 2020, Alg. 1).

  Args:
    q: [n, d] queries on this device; L2-normalised here.
    k: [n, d] their positive keys (row i for query i); L2-normalised here.
      MoCo passes keys that already carry no gradient.
    queue: [K, d] negatives, L2-normalised by the caller, the same on every
      device. No gradient flows into it.
    temperature: tau > 0.
    axis_name: mesh axis the global batch is split over, or None.

  Logits are [q.k, q.queue] / tau with the positive at index 0; the loss is
  the cross-entropy averaged over the global batch (a psum of the local sums
  divided by the global N, so the gradients are global as the module
  docstring explains). Negatives are the queue only, never other keys of the
  batch, so no gather is needed.
  """
  q = l2_normalize(q.astype(jnp.float32))
  k = l2_normalize(k.astype(jnp.float32))
  negatives = jax.lax.stop_gradient(queue.astype(jnp.float32))
  pos = jnp.sum(q * k, axis=-1, keepdims=True)                  # [n, 1]
  logits = jnp.concatenate([pos, q @ negatives.T], axis=-1) / temperature
  local_sum = jnp.sum(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])
  hits = jnp.sum(jnp.argmax(logits, axis=-1) == 0).astype(jnp.float32)
  total = q.shape[0] * (1 if axis_name is None
                        else jax.lax.axis_size(axis_name))
  return InfoNCEOutput(
      loss=_sum_over_devices(local_sum, axis_name) / total,
      accuracy=_sum_over_devices(hits, axis_name) / total)


def info_nce(q: jax.Array, k: jax.Array, queue: jax.Array, *,
             temperature: float, axis_name: str | None = None) -> jax.Array:
  """The InfoNCE loss of the global batch (see `info_nce_with_accuracy`)."""
  return info_nce_with_accuracy(q, k, queue, temperature=temperature,
                                axis_name=axis_name).loss


def symmetric_info_nce_with_accuracy(
    q1: jax.Array, q2: jax.Array, k1: jax.Array, k2: jax.Array,
    queue: jax.Array, *, temperature: float,
    axis_name: str | None = None) -> InfoNCEOutput:
  """Both views as query: InfoNCE(q1, k2) + InfoNCE(q2, k1).

  The SUM, as the official MoCo CIFAR-10 demo computes it (so it starts near
  2 log(K + 1)); the accuracy is the mean over the 2N queries.
  """
  a = info_nce_with_accuracy(q1, k2, queue, temperature=temperature,
                             axis_name=axis_name)
  b = info_nce_with_accuracy(q2, k1, queue, temperature=temperature,
                             axis_name=axis_name)
  return InfoNCEOutput(loss=a.loss + b.loss,
                       accuracy=(a.accuracy + b.accuracy) / 2)
