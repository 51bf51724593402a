"""InfoNCE with a queue (MoCo), against a float64 NumPy reference, and sharded
over 8 devices against unsharded."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import losses, parallel

TAU = 0.2


def _inputs(n=16, d=8, k=32, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(n, d))
  keys = q + 1.5 * rng.normal(size=(n, d))  # positives resemble their query
  queue = rng.normal(size=(k, d))
  queue /= np.linalg.norm(queue, axis=1, keepdims=True)
  return q, keys, queue


def _reference(q, k, queue, tau):
  """float64 loss, accuracy, dL/dq, dL/dk (written out by hand)."""
  qn = np.linalg.norm(q, axis=1, keepdims=True)
  kn = np.linalg.norm(k, axis=1, keepdims=True)
  qh, kh = q / qn, k / kn
  logits = np.concatenate([np.sum(qh * kh, 1, keepdims=True), qh @ queue.T],
                          axis=1) / tau
  shifted = logits - logits.max(axis=1, keepdims=True)
  p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
  n = q.shape[0]
  loss = np.mean(-np.log(p[:, 0]))
  accuracy = np.mean(np.argmax(logits, axis=1) == 0)
  # dL/dlogits = (p - onehot(0)) / n; then through the dot products and the
  # normalisation x -> x/|x| (Jacobian (I - x^ x^T) / |x|).
  g_logits = p.copy()
  g_logits[:, 0] -= 1
  g_logits /= n * tau
  g_qh = g_logits[:, :1] * kh + g_logits[:, 1:] @ queue
  g_kh = g_logits[:, :1] * qh
  unnormalise = lambda g, xh, norm: (
      g - xh * np.sum(xh * g, 1, keepdims=True)) / norm
  return loss, accuracy, unnormalise(g_qh, qh, qn), unnormalise(g_kh, kh, kn)


def test_value_accuracy_and_gradients_match_float64_reference():
  q, k, queue = _inputs()
  loss_ref, acc_ref, gq_ref, gk_ref = _reference(q, k, queue, TAU)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  out = losses.info_nce_with_accuracy(f32(q), f32(k), f32(queue),
                                      temperature=TAU)
  np.testing.assert_allclose(out.loss, loss_ref, rtol=1e-5)
  np.testing.assert_allclose(out.accuracy, acc_ref)
  assert 0 < acc_ref < 1  # both outcomes occur in the fixture
  grad = jax.jit(jax.grad(
      lambda q, k, queue: losses.info_nce(q, k, queue, temperature=TAU),
      argnums=(0, 1, 2)))
  gq, gk, gqueue = grad(f32(q), f32(k), f32(queue))
  np.testing.assert_allclose(gq, gq_ref, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(gk, gk_ref, rtol=1e-4, atol=1e-6)
  # Queue negatives carry no gradient.
  assert not np.any(np.asarray(gqueue))


def test_untrained_loss_is_about_log_k_plus_one():
  rng = np.random.default_rng(3)
  q, k = (jnp.asarray(rng.normal(size=(64, 128)), jnp.float32)
          for _ in range(2))
  queue = losses.l2_normalize(jnp.asarray(rng.normal(size=(4096, 128)),
                                          jnp.float32))
  loss = losses.info_nce(q, k, queue, temperature=1.0)
  assert abs(float(loss) - np.log(4097)) < 0.05


def test_symmetric_loss_is_the_sum_of_both_directions():
  q1, k1, queue = _inputs(seed=1)
  q2, k2, _ = _inputs(seed=2)
  args = [jnp.asarray(x, jnp.float32) for x in (q1, q2, k1, k2, queue)]
  out = losses.symmetric_info_nce_with_accuracy(*args, temperature=TAU)
  l12, a12, _, _ = _reference(q1, k2, queue, TAU)
  l21, a21, _, _ = _reference(q2, k1, queue, TAU)
  np.testing.assert_allclose(out.loss, l12 + l21, rtol=1e-5)
  np.testing.assert_allclose(out.accuracy, (a12 + a21) / 2)


@pytest.mark.parametrize("num_devices", [2, 8])
def test_sharded_loss_and_gradients_equal_unsharded(num_devices):
  # A replicated projection w makes the queries, as a model's params would:
  # its gradient must come out global without any pmean by the caller.
  x, k, queue = _inputs(n=16, d=8, k=24, seed=4)
  w = np.random.default_rng(5).normal(size=(8, 8))
  x, k, queue, w = (jnp.asarray(a, jnp.float32) for a in (x, k, queue, w))

  def loss(w, x, k, queue, axis_name):
    out = losses.info_nce_with_accuracy(x @ w, k, queue, temperature=TAU,
                                        axis_name=axis_name)
    return out.loss, out.accuracy

  def per_device(w, x, k, queue, axis_name=None):
    (value, acc), grads = jax.value_and_grad(loss, argnums=(0, 2),
                                             has_aux=True)(
                                                 w, x, k, queue, axis_name)
    return value, acc, grads[0], grads[1]

  expected = jax.jit(per_device)(w, x, k, queue)
  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  sharded = jax.jit(jax.shard_map(
      functools.partial(per_device, axis_name=parallel.DATA_AXIS), mesh=mesh,
      in_specs=(P(), P("data"), P("data"), P()),
      out_specs=(P(), P(), P(), P("data"))))
  split = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    actual = sharded(jax.device_put(w, NamedSharding(mesh, P())),
                     jax.device_put(x, split), jax.device_put(k, split),
                     jax.device_put(queue, NamedSharding(mesh, P())))
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5,
                               atol=1e-7)
