"""NT-Xent against a float64 NumPy transcription of the paper's formula."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import losses

pytestmark = pytest.mark.usefixtures("optimized_xla")


def reference_nt_xent(z_a, z_b, temperature):
  """SimCLR eq. (1), averaged over all 2N anchors, in float64."""
  z = np.concatenate([z_a, z_b]).astype(np.float64)
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n2 = z.shape[0]
  n = n2 // 2
  sim = z @ z.T / temperature
  total = 0.0
  for k in range(n2):
    pos = (k + n) % n2
    others = [sim[k, j] for j in range(n2) if j != k]
    total += -(sim[k, pos] - np.log(np.sum(np.exp(others))))
  return total / n2


def reference_grad(z_a, z_b, temperature, eps=1e-6):
  """Central finite differences of the float64 reference."""
  grads = []
  for z in (z_a, z_b):
    g = np.zeros_like(z, dtype=np.float64)
    for idx in np.ndindex(*z.shape):
      plus, minus = z.astype(np.float64).copy(), z.astype(np.float64).copy()
      plus[idx] += eps
      minus[idx] -= eps
      args_p = (plus, z_b) if z is z_a else (z_a, plus)
      args_m = (minus, z_b) if z is z_a else (z_a, minus)
      g[idx] = (reference_nt_xent(*args_p, temperature)
                - reference_nt_xent(*args_m, temperature)) / (2 * eps)
    grads.append(g)
  return grads


def _embeddings(n, d, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          rng.normal(size=(n, d)).astype(np.float32))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_value_matches_reference_single_device(temperature):
  z_a, z_b = _embeddings(16, 8)
  got = losses.nt_xent(jnp.asarray(z_a), jnp.asarray(z_b),
                       temperature=temperature)
  want = reference_nt_xent(z_a, z_b, temperature)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_gradient_matches_reference_single_device():
  z_a, z_b = _embeddings(6, 4, seed=1)
  grad_fn = jax.grad(functools.partial(losses.nt_xent, temperature=0.2),
                     argnums=(0, 1))
  got = grad_fn(jnp.asarray(z_a), jnp.asarray(z_b))
  want = reference_grad(z_a, z_b, 0.2)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-6)


def _sharded_value_and_grad(z_a, z_b, temperature, num_devices):
  mesh = jax.make_mesh((num_devices,), ("data",),
                       devices=jax.devices()[:num_devices])

  def per_device(a, b):
    def loss(a, b):
      return losses.nt_xent(a, b, temperature=temperature, axis_name="data")
    return jax.value_and_grad(loss, argnums=(0, 1))(a, b)

  step = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P("data"), P("data")),
      out_specs=(P(), (P("data"), P("data")))))
  sharding = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    return step(jax.device_put(z_a, sharding), jax.device_put(z_b, sharding))


@pytest.mark.parametrize("num_devices", [2, 4, 8])
def test_sharded_equals_global_batch_reference(num_devices):
  z_a, z_b = _embeddings(16, 8, seed=2)
  value, (g_a, g_b) = _sharded_value_and_grad(z_a, z_b, 0.5, num_devices)
  np.testing.assert_allclose(float(value), reference_nt_xent(z_a, z_b, 0.5),
                             rtol=1e-5)
  want_a, want_b = jax.grad(
      functools.partial(losses.nt_xent, temperature=0.5), argnums=(0, 1))(
          jnp.asarray(z_a), jnp.asarray(z_b))
  np.testing.assert_allclose(np.asarray(g_a), np.asarray(want_a), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(np.asarray(g_b), np.asarray(want_b), rtol=1e-5,
                             atol=1e-7)


def test_sharded_gradient_matches_float64_reference():
  z_a, z_b = _embeddings(8, 4, seed=3)
  _, grads = _sharded_value_and_grad(z_a, z_b, 0.3, 4)
  for g, w in zip(grads, reference_grad(z_a, z_b, 0.3)):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs_stay_finite(dtype):
  # Low temperature makes logits large; identical rows make the self term
  # tie with the positive - the cases where additive masking breaks.
  z_a, _ = _embeddings(32, 16, seed=4)
  z = jnp.asarray(z_a, dtype)
  value, grads = jax.value_and_grad(
      functools.partial(losses.nt_xent, temperature=0.05),
      argnums=(0, 1))(z, z)
  assert np.isfinite(float(value))
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
  want = reference_nt_xent(np.asarray(z, np.float32),
                           np.asarray(z, np.float32), 0.05)
  np.testing.assert_allclose(float(value), want, rtol=2e-2)


def test_accuracy_is_one_for_perfectly_separated_pairs():
  eye = np.eye(8, dtype=np.float32)
  out = losses.nt_xent_with_accuracy(jnp.asarray(eye), jnp.asarray(eye),
                                     temperature=0.1)
  assert float(out.accuracy) == 1.0
  # Positives identical and all else orthogonal: loss is log(1 + (2N-2)e^-10).
  np.testing.assert_allclose(float(out.loss),
                             np.log1p(14 * np.exp(-10)), rtol=0, atol=1e-6)


def test_zero_embedding_is_finite():
  z_a, z_b = _embeddings(4, 3)
  z_a[0] = 0.0
  value = losses.nt_xent(jnp.asarray(z_a), jnp.asarray(z_b), temperature=0.5)
  assert np.isfinite(float(value))


# --- The blocked, custom-VJP implementation -------------------------------


def reference_grad_analytic(z_a, z_b, temperature):
  """Closed-form float64 gradient of `reference_nt_xent`."""
  z = np.concatenate([z_a, z_b]).astype(np.float64)
  norm = np.linalg.norm(z, axis=1, keepdims=True)
  u = z / norm
  n2 = z.shape[0]
  sim = u @ u.T / temperature
  np.fill_diagonal(sim, -np.inf)
  soft = np.exp(sim - sim.max(axis=1, keepdims=True))
  soft /= soft.sum(axis=1, keepdims=True)
  pos = (np.arange(n2) + n2 // 2) % n2
  soft[np.arange(n2), pos] -= 1.0
  g_sim = soft / n2                      # d loss / d sim
  g_u = (g_sim + g_sim.T) @ u / temperature
  g_z = (g_u - u * np.sum(u * g_u, axis=1, keepdims=True)) / norm
  return g_z[:n2 // 2], g_z[n2 // 2:]


def plain_nt_xent_with_accuracy(z_a, z_b, temperature):
  """The unblocked formula in JAX, differentiated by autodiff."""
  n = z_a.shape[0]
  z = losses.l2_normalize(jnp.concatenate([z_a, z_b]).astype(jnp.float32))
  logits = z @ z.T / temperature
  idx = jnp.arange(2 * n)
  logits = jnp.where(idx[:, None] == idx[None, :],
                     jnp.finfo(jnp.float32).min, logits)
  pos = (idx + n) % (2 * n)
  loss = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[idx, pos])
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == pos)
  return loss, accuracy


def _blocked_value_and_grad(z_a, z_b, temperature, block_rows):
  def loss(a, b):
    out = losses.nt_xent_with_accuracy(a, b, temperature=temperature,
                                       block_rows=block_rows)
    return out.loss, out.accuracy
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      jnp.asarray(z_a), jnp.asarray(z_b))


# 2n = 24 anchors: one block (the default), blocks + tail, blocks only,
# single rows.
@pytest.mark.parametrize("block_rows", [None, 5, 8, 1])
@pytest.mark.parametrize("temperature", [0.5, 0.1, 0.02])
def test_blocked_custom_vjp_matches_float64_and_autodiff(block_rows,
                                                         temperature):
  # tau = 0.02 takes the row-max shift instead of the positive's logit.
  z_a, z_b = _embeddings(12, 8, seed=5)
  (value, acc), grads = _blocked_value_and_grad(z_a, z_b, temperature,
                                                block_rows)
  np.testing.assert_allclose(float(value),
                             reference_nt_xent(z_a, z_b, temperature),
                             rtol=1e-5)
  for g, w in zip(grads, reference_grad_analytic(z_a, z_b, temperature)):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-6)
  _assert_same_value_and_grads(
      ((value, acc), grads),
      jax.value_and_grad(plain_nt_xent_with_accuracy, argnums=(0, 1),
                         has_aux=True)(jnp.asarray(z_a), jnp.asarray(z_b),
                                       temperature))


def _assert_same_value_and_grads(got, want):
  """((loss, accuracy), grads) pairs: equal up to float32 reordering."""
  (value, acc), grads = got
  (want_value, want_acc), want_grads = want
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-6)
  assert float(acc) == float(want_acc)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5,
                               atol=1e-7)


def test_analytic_gradient_agrees_with_finite_differences():
  # Guards the closed form the tests above trust.
  z_a, z_b = _embeddings(5, 3, seed=6)
  for g, w in zip(reference_grad_analytic(z_a, z_b, 0.3),
                  reference_grad(z_a, z_b, 0.3)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-8)


def test_blocked_accuracy_matches_argmax_on_many_blocks():
  # Correlated views: some anchors hit, some miss.
  rng = np.random.default_rng(7)
  z_a = rng.normal(size=(64, 16)).astype(np.float32)
  z_b = (z_a + 1.5 * rng.normal(size=z_a.shape)).astype(np.float32)
  out = jax.jit(functools.partial(losses.nt_xent_with_accuracy,
                                  temperature=0.2, block_rows=12))(
                                      jnp.asarray(z_a), jnp.asarray(z_b))
  loss, acc = jax.jit(plain_nt_xent_with_accuracy, static_argnums=2)(
      jnp.asarray(z_a), jnp.asarray(z_b), 0.2)
  assert 0.0 < float(acc) < 1.0
  assert float(out.accuracy) == float(acc)
  np.testing.assert_allclose(float(out.loss), float(loss), rtol=1e-6)


@pytest.mark.parametrize("block_rows", [3, 1000])
def test_blocked_sharded_equals_unsharded(block_rows):
  # 4 devices x 2n = 8 local anchors: blocks + tail, and one local block.
  z_a, z_b = _embeddings(16, 8, seed=8)
  mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])

  def per_device(a, b):
    def loss(a, b):
      out = losses.nt_xent_with_accuracy(a, b, temperature=0.3,
                                         axis_name="data",
                                         block_rows=block_rows)
      return out.loss, out.accuracy
    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(a, b)

  step = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P("data"), P("data")),
      out_specs=((P(), P()), (P("data"), P("data")))))
  sharding = NamedSharding(mesh, P("data"))
  with jax.set_mesh(mesh):
    got = step(jax.device_put(z_a, sharding), jax.device_put(z_b, sharding))
  _assert_same_value_and_grads(
      got, _blocked_value_and_grad(z_a, z_b, 0.3, None))


def test_blocked_bf16_inputs_match_float32_on_rounded_values():
  z_a, z_b = _embeddings(12, 8, seed=9)
  za16, zb16 = jnp.asarray(z_a, jnp.bfloat16), jnp.asarray(z_b, jnp.bfloat16)
  (value, _), grads = _blocked_value_and_grad(za16, zb16, 0.1, 5)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  rounded = [np.asarray(x, np.float32) for x in (za16, zb16)]
  np.testing.assert_allclose(float(value), reference_nt_xent(*rounded, 0.1),
                             rtol=1e-5)
  for g, w in zip(grads, reference_grad_analytic(*rounded, 0.1)):
    np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=2e-2,
                               atol=1e-3)


def test_blocked_loss_without_gradient_matches():
  # The forward-only path (no custom-VJP fwd) computes the same numbers.
  z_a, z_b = _embeddings(12, 8, seed=10)
  out = jax.jit(functools.partial(losses.nt_xent_with_accuracy,
                                  temperature=0.1, block_rows=5))(
                                      jnp.asarray(z_a), jnp.asarray(z_b))
  (value, acc), _ = _blocked_value_and_grad(z_a, z_b, 0.1, 5)
  assert float(out.loss) == float(value)
  assert float(out.accuracy) == float(acc)


def test_traced_temperature_matches_and_gets_a_gradient():
  # A traced tau cannot choose the shift statically: the row-max path.
  z_a, z_b = _embeddings(12, 8, seed=11)
  args = (jnp.asarray(z_a), jnp.asarray(z_b))

  def loss(a, b, tau):
    return losses.nt_xent(a, b, temperature=tau, block_rows=5)

  value, g_tau = jax.jit(jax.value_and_grad(loss, argnums=2))(
      *args, jnp.float32(0.3))
  np.testing.assert_allclose(float(value), reference_nt_xent(z_a, z_b, 0.3),
                             rtol=1e-5)
  eps = 1e-3
  want = (reference_nt_xent(z_a, z_b, 0.3 + eps)
          - reference_nt_xent(z_a, z_b, 0.3 - eps)) / (2 * eps)
  np.testing.assert_allclose(float(g_tau), want, rtol=1e-3)


def test_default_blocks_fit_cache_on_cpu_and_cover_the_batch_elsewhere():
  # CPU: ~16 MiB of float32 logits per block, never below 512 rows.
  assert losses.default_block_rows(8192, "cpu") == 512
  assert losses.default_block_rows(2048, "cpu") == 2048
  # GPU/TPU: bounded by memory only, so a per-device batch of 2n = 8192
  # anchors against 2N = 32768 candidates is a single block.
  assert losses.default_block_rows(32768, "gpu") >= 8192
  assert losses.default_block_rows(32768, "tpu") >= 8192
