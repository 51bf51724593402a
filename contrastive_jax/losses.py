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

NT-Xent's per-device core is a `jax.custom_vjp` that sits inside the
`all_gather` and the `psum`, so both are still transposed by JAX as above.
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


def _default_block_rows(num_cols: int, backend: str | None = None) -> int:
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
  all_a = _gather(a, axis_name)            # [N, d]
  all_b = _gather(b, axis_name)            # [N, d]
  big_n = all_a.shape[0]
  # 1/tau folded into the anchors: 2n x d multiplies instead of 2n x 2N.
  anchors = jnp.concatenate([a, b], axis=0) / temperature  # [2n, d]
  candidates = jnp.concatenate([all_a, all_b], axis=0)     # [2N, d]
  # Global column of each local anchor's own embedding.
  rows = jnp.arange(n) + _global_offset(n, axis_name)
  self_col = jnp.concatenate([rows, rows + big_n])
  if block_rows is None:
    block_rows = _default_block_rows(2 * big_n)
  inv_tau = (1.0 / temperature if isinstance(temperature, numbers.Real)
             else None)
  local_sum, hits = _blocked_loss_sum(
      anchors, candidates, self_col,
      _Static(min(block_rows, 2 * n), inv_tau, big_n))

  total = 2 * big_n
  loss = _sum_over_devices(local_sum, axis_name) / total
  accuracy = _sum_over_devices(hits, axis_name) / total
  return NTXentOutput(loss=loss, accuracy=accuracy)


def nt_xent(z_a: jax.Array, z_b: jax.Array, *, temperature: float,
            axis_name: str | None = None,
            block_rows: int | None = None) -> jax.Array:
  """The NT-Xent loss of the global batch (see `nt_xent_with_accuracy`)."""
  return nt_xent_with_accuracy(z_a, z_b, temperature=temperature,
                               axis_name=axis_name,
                               block_rows=block_rows).loss


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
  total = p1.shape[0] * (1 if axis_name is None
                         else jax.lax.axis_size(axis_name))
  return _sum_over_devices(local_sum, axis_name) / total


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
  total = p1.shape[0] * (1 if axis_name is None
                         else jax.lax.axis_size(axis_name))
  return -0.5 * _sum_over_devices(local_sum, axis_name) / total


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
    keys = _gather(l2_normalize(
        jax.lax.stop_gradient(k.astype(jnp.float32))), axis_name)  # [N, d]
    logits = (q @ keys.T) / temperature                             # [n, N]
    labels = jnp.arange(q.shape[0]) + _global_offset(q.shape[0], axis_name)
    positive = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.sum(jax.nn.logsumexp(logits, axis=-1) - positive)

  local_sum = ctr_sum(q1, k2) + ctr_sum(q2, k1)
  total = q1.shape[0] * (1 if axis_name is None
                         else jax.lax.axis_size(axis_name))
  return 2 * temperature * _sum_over_devices(local_sum, axis_name) / total


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
  n = predictions[0].shape[0]
  total = n * (1 if axis_name is None else jax.lax.axis_size(axis_name))
  return _sum_over_devices(local_sum, axis_name) / total
