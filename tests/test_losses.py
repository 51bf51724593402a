"""NT-Xent against a float64 NumPy transcription of the paper's formula."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import losses


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
