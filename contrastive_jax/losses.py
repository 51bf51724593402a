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
