"""NT-Xent (SimCLR), with the negatives of the whole global batch.

Its per-device core is a `jax.custom_vjp` that sits inside the `all_gather`
and the `psum`, so both are still transposed by JAX (losses/__init__.py).
It scores anchors in row blocks and, when differentiated, computes the
gradient of its local loss sum in the forward pass, block by block, while
that block's logits are in cache; the backward pass only scales it by the
incoming cotangent. Being a custom VJP, it has no forward-mode derivative
(`jax.jvp`, `jax.jacfwd`, `jax.hessian` of NT-Xent are unsupported).
"""
import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from contrastive_jax.losses.global_batch import (gather, global_offset,
                                                 l2_normalize,
                                                 sum_over_devices)


class NTXentOutput(NamedTuple):
  loss: jax.Array      # scalar: mean over all 2N anchors of the global batch
  accuracy: jax.Array  # scalar: fraction of anchors whose positive wins


class _Static(NamedTuple):
  """Hashable settings of the blocked loss (a nondiff argument)."""
  block_rows: int
  inv_tau: float | None   # None: tau is traced, its size unknown.
  big_n: int   # N of the global batch: column c + N is the positive of c.


# On CPU, blocks of up to 16 MiB of logits stay in the (32 MiB, shared) L3
# while they are exponentiated, summed and turned into a gradient; below ~512
# rows a block pays more for adding its [2N, d] candidate gradient into the
# running sum than it saves (measured on a 2-core EPYC, d = 128). GPUs and
# TPUs stream the whole [2n, 2N] matrix at full bandwidth and want big
# matmuls, so there a block is bounded only by memory (1 GiB of logits:
# one block for any per-device batch in use).
_CPU_BLOCK_BYTES = 16 << 20
_ACCELERATOR_BLOCK_BYTES = 1 << 30
_MIN_BLOCK_ROWS = 512
# Shifting each row by its positive logit bounds exp() by e^(2/tau) over up
# to ~1e5 columns: finite in float32 while 2/tau < 88 - log(1e5).
_MAX_POSITIVE_SHIFT_INV_TAU = 30.0


def default_block_rows(num_cols: int, backend: str | None = None) -> int:
  backend = backend or jax.default_backend()
  budget = _CPU_BLOCK_BYTES if backend == "cpu" else _ACCELERATOR_BLOCK_BYTES
  return max(_MIN_BLOCK_ROWS, budget // (4 * num_cols))


def _score_block(anchors, candidates, self_col, static: _Static,
                 with_grad: bool):
  """Loss sum, hits and (optionally) gradients of one block of anchors.

  anchors [B, d] (already divided by tau) against candidates [2N, d]. The
  gradient of the loss sum w.r.t. the logits is softmax - onehot(positive),
  so the anchors' gradient is that @ candidates and the candidates' is its
  transpose @ anchors.
  """
  logits = anchors @ candidates.T                               # [B, 2N]
  pos_col = (self_col + static.big_n) % (2 * static.big_n)
  # The positive read from the matmul itself (a B-element gather), so that a
  # row whose positive is its largest logit cancels exactly.
  pos_logit = jnp.take_along_axis(logits, pos_col[:, None], axis=-1)
  cols = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
  # Drop self-similarity with a finite, dtype-safe value (never mask*1e9,
  # which overflows in half precision): exp() of it is exactly 0.
  logits = jnp.where(cols == self_col[:, None],
                     jnp.finfo(logits.dtype).min, logits)
  if (static.inv_tau is not None
      and static.inv_tau <= _MAX_POSITIVE_SHIFT_INV_TAU):
    # loss = log(sum_j exp(l_j - l_pos)): no row-max pass, and the sum is at
    # least the positive's exp(0) = 1, so it never underflows.
    shift = pos_logit
  else:
    shift = jnp.max(logits, axis=-1, keepdims=True)
  exp = jnp.exp(logits - shift)
  sum_exp = jnp.sum(exp, axis=-1, keepdims=True)
  loss_sum = jnp.sum(jnp.log(sum_exp) + (shift - pos_logit))
  # A hit when the positive is the row's largest logit (an exact tie with an
  # earlier column counts too, where argmax would pick that column).
  hits = jnp.sum(jnp.max(logits, axis=-1, keepdims=True) <= pos_logit,
                 dtype=jnp.float32)
  if not with_grad:
    return loss_sum, hits, None, None
  grad_logits = (exp * (1.0 / sum_exp)
                 - (cols == pos_col[:, None]).astype(exp.dtype))
  d_anchors = grad_logits @ candidates                          # [B, d]
  # Transposed, [d, 2N]: alone, XLA:CPU ran A^T G twice as fast as G^T A.
  d_candidates_t = jax.lax.dot_general(
      anchors, grad_logits, (((0,), (0,)), ((), ())))
  return loss_sum, hits, d_anchors, d_candidates_t


def _scan_blocks(anchors, candidates, self_col, static: _Static,
                 with_grad: bool):
  rows, dim = anchors.shape
  size = static.block_rows
  num_blocks, tail = divmod(rows, size)
  main = num_blocks * size

  def body(d_candidates_t, block):
    out = _score_block(block[0], candidates, block[1], static, with_grad)
    if with_grad:
      d_candidates_t = d_candidates_t + out[3]
    return d_candidates_t, out[:3]

  # Only the candidates' gradient is carried; per-block sums come out as
  # stacked outputs (a scalar carry would need its vma cast under shard_map).
  init = jnp.zeros_like(candidates.T) if with_grad else None
  blocks = (anchors[:main].reshape(num_blocks, size, dim),
            self_col[:main].reshape(num_blocks, size))
  d_candidates_t, (loss_sums, hits, d_anchors) = jax.lax.scan(body, init,
                                                               blocks)
  loss_sum, hits = jnp.sum(loss_sums), jnp.sum(hits)
  if with_grad:
    d_anchors = d_anchors.reshape(main, dim)
  if tail:
    out = _score_block(anchors[main:], candidates, self_col[main:], static,
                       with_grad)
    loss_sum, hits = loss_sum + out[0], hits + out[1]
    if with_grad:
      d_anchors = jnp.concatenate([d_anchors, out[2]])
      d_candidates_t = d_candidates_t + out[3]
  return loss_sum, hits, d_anchors, d_candidates_t.T if with_grad else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _blocked_loss_sum(anchors, candidates, self_col, static: _Static):
  """(sum over local anchors of their NT-Xent terms, number of hits).

  Differentiable in `anchors` and `candidates` only. The loss is a scalar,
  so its gradient is a fixed [2n, d], [2N, d] pair times the incoming
  cotangent: the forward pass under differentiation computes that pair
  while each block of logits is still in cache, rather than the backward
  pass storing or recomputing the 2n x 2N softmax.
  """
  loss_sum, hits, _, _ = _scan_blocks(anchors, candidates, self_col, static,
                                      with_grad=False)
  return loss_sum, hits


def _blocked_loss_sum_fwd(anchors, candidates, self_col, static: _Static):
  loss_sum, hits, d_anchors, d_candidates = _scan_blocks(
      anchors, candidates, self_col, static, with_grad=True)
  return (loss_sum, hits), (d_anchors, d_candidates)


def _blocked_loss_sum_bwd(static: _Static, residuals, cotangents):
  del static
  d_anchors, d_candidates = residuals
  g, _ = cotangents  # `hits` is a count: nothing flows back from it.
  return g * d_anchors, g * d_candidates, None


_blocked_loss_sum.defvjp(_blocked_loss_sum_fwd, _blocked_loss_sum_bwd)


def nt_xent_with_accuracy(z_a: jax.Array, z_b: jax.Array, *,
                          temperature: float,
                          axis_name: str | None = None,
                          block_rows: int | None = None) -> NTXentOutput:
  """NT-Xent (SimCLR, Chen et al. 2020, eq. 1) and the contrastive accuracy.

  Args:
    z_a, z_b: [n, d] projections of the two views of the same n images on
      this device (row i of z_a and row i of z_b are a positive pair).
    temperature: tau > 0.
    axis_name: mesh axis the global batch is split over, or None.
    block_rows: anchors scored per block (default: on CPU a block of
      logits of about 16 MiB, at least 512 rows, so that it stays in cache;
      on GPU/TPU up to 1 GiB of logits, i.e. usually one block).

  Each device scores its 2n local anchors against the 2N global candidates
  (the gathered embeddings), `block_rows` anchors at a time: memory is
  O(min(block, local rows) x global columns); the global 2N x 2N matrix
  never exists anywhere, nor, once 2n exceeds a block, the local 2n x 2N
  one. An anchor's accuracy counts as a hit unless some other candidate
  scores strictly higher than its positive.
  """
  n = z_a.shape[0]
  # Cosine similarity in float32 whatever the compute dtype: the softmax
  # over thousands of logits needs the mantissa.
  a = l2_normalize(z_a.astype(jnp.float32))
  b = l2_normalize(z_b.astype(jnp.float32))
  all_a = gather(a, axis_name)            # [N, d]
  all_b = gather(b, axis_name)            # [N, d]
  big_n = all_a.shape[0]
  # 1/tau folded into the anchors: 2n x d multiplies instead of 2n x 2N.
  anchors = jnp.concatenate([a, b], axis=0) / temperature  # [2n, d]
  candidates = jnp.concatenate([all_a, all_b], axis=0)     # [2N, d]
  # Global column of each local anchor's own embedding.
  rows = jnp.arange(n) + global_offset(n, axis_name)
  self_col = jnp.concatenate([rows, rows + big_n])
  if block_rows is None:
    block_rows = default_block_rows(2 * big_n)
  inv_tau = (1.0 / temperature if isinstance(temperature, numbers.Real)
             else None)
  local_sum, hits = _blocked_loss_sum(
      anchors, candidates, self_col,
      _Static(min(block_rows, 2 * n), inv_tau, big_n))

  total = 2 * big_n
  loss = sum_over_devices(local_sum, axis_name) / total
  accuracy = sum_over_devices(hits, axis_name) / total
  return NTXentOutput(loss=loss, accuracy=accuracy)


def nt_xent(z_a: jax.Array, z_b: jax.Array, *, temperature: float,
            axis_name: str | None = None,
            block_rows: int | None = None) -> jax.Array:
  """The NT-Xent loss of the global batch (see `nt_xent_with_accuracy`)."""
  return nt_xent_with_accuracy(z_a, z_b, temperature=temperature,
                               axis_name=axis_name,
                               block_rows=block_rows).loss


