"""MoCo's contrastive losses: InfoNCE against a queue of negatives (v1/v2),
and v3's symmetrised loss against the keys of the global batch."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from contrastive_jax.losses.global_batch import (gather, global_count,
                                                 global_offset, l2_normalize,
                                                 sum_over_devices)


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
  total = global_count(q.shape[0], axis_name)
  return InfoNCEOutput(
      loss=sum_over_devices(local_sum, axis_name) / total,
      accuracy=sum_over_devices(hits, axis_name) / total)


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


def moco_v3_loss(q1: jax.Array, q2: jax.Array, k1: jax.Array, k2: jax.Array,
                 *, temperature: float,
                 axis_name: str | None = None) -> jax.Array:
  """MoCo v3's symmetrised contrastive loss of the global batch (Chen, Xie &
  He 2021, Alg. 1): ctr(q1, k2) + ctr(q2, k1).

  Args:
    q1, q2: [n, d] predictions (predictor on projector) of views 1 and 2 on
      this device.
    k1, k2: [n, d] momentum-encoder projections of the same views;
      stop-gradient here (the reference computes them under `no_grad`,
      moco/builder.py:89-94 @c349e6e).
    temperature: tau > 0.
    axis_name: mesh axis the global batch is split over, or None.

  ctr(q, k) (builder.py:63-73): unit q against the N unit keys of the
  global batch (gathered), logits q k^T / tau, the positive of local row i
  at global column i + n * device index; the cross-entropy times 2 tau.
  The reference's per-GPU mean, averaged over GPUs by DDP's gradient
  all-reduce, is the mean over the global batch: here a psum of local sums
  over the global N, so the gradients are global (module docstring).
  """
  def ctr_sum(q, k):
    q = l2_normalize(q.astype(jnp.float32))
    # The keys carry no gradient, so the gather needs no transpose.
    keys = gather(l2_normalize(
        jax.lax.stop_gradient(k.astype(jnp.float32))), axis_name)  # [N, d]
    logits = (q @ keys.T) / temperature                             # [n, N]
    labels = jnp.arange(q.shape[0]) + global_offset(q.shape[0], axis_name)
    positive = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - positive)

  local_sum = ctr_sum(q1, k2) + ctr_sum(q2, k1)
  total = global_count(q1.shape[0], axis_name)
  return 2 * temperature * sum_over_devices(local_sum, axis_name) / total
