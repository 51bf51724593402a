"""What every loss here shares: unit vectors, and the global batch seen from
one device (its offset, the gather of all devices' rows, the sum over
devices, the global count)."""

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  # rsqrt of a clamped squared norm: finite for an all-zero row, unlike x/|x|.
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def global_offset(local_n: int, axis_name) -> jax.Array:
  """The global row of this device's first example."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return jax.lax.axis_index(axis_name) * local_n


def gather(x: jax.Array, axis_name) -> jax.Array:
  if axis_name is None:
    return x
  # Negatives come from every device; gradients flow back through the
  # gather (its transpose is a reduce-scatter).
  return jax.lax.all_gather(x, axis_name, tiled=True)


def sum_over_devices(x: jax.Array, axis_name) -> jax.Array:
  """A psum: whose transpose hands every device the cotangent 1 (see
  losses/__init__.py)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def global_count(local_n: int, axis_name) -> int:
  """Examples in the global batch: the divisor of a global-batch mean."""
  return local_n * (1 if axis_name is None else jax.lax.axis_size(axis_name))
