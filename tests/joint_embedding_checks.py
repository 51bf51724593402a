"""Scaffolding the two-view method tests share (Barlow Twins, VICReg; MoCo
v3's tiny config, which is method_checks.tiny_digits_config): float64
central differences, the loss-and-gradient check against a float64
reference, the projections a step's loss is computed on, and the
1-vs-8-device check of a method whose params are {'encoder', 'head',
'probe'}."""

import jax
import jax.numpy as jnp
import numpy as np

from tests import method_checks
# The tiny step (method_checks'), where the two-view tests read it.
from tests.method_checks import BATCH, SIZE, tiny_digits_config  # noqa: F401


def numeric_gradient(loss, args, h=1e-6):
  """Central differences of a float64 function of several arrays."""
  args = [np.array(a, np.float64) for a in args]
  grads = []
  for a in args:
    g = np.zeros_like(a)
    for index in np.ndindex(a.shape):
      old = a[index]
      a[index] = old + h
      up = loss(*args)
      a[index] = old - h
      down = loss(*args)
      a[index] = old
      g[index] = (up - down) / (2 * h)
    grads.append(g)
  return grads


def assert_loss_and_gradient_match(loss_fn, reference, z1, z2, num_devices):
  """`loss_fn(z1, z2)` (over axis 'data', the batch sharded on
  `num_devices`) == the float64 `reference(z1, z2)` to rtol 1e-5, and its
  gradients == the reference's central differences to rtol 1e-4 (atol
  1e-5 of the largest)."""
  want = reference(z1, z2)
  want_g1, want_g2 = numeric_gradient(reference, (z1, z2))
  loss, (g1, g2) = method_checks.sharded_value_and_grads(
      loss_fn, (z1, z2), num_devices)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  scale = np.max(np.abs(want_g1))
  np.testing.assert_allclose(g1, want_g1, rtol=1e-4, atol=1e-5 * scale)
  np.testing.assert_allclose(g2, want_g2, rtol=1e-4, atol=1e-5 * scale)


def projections(model, state, batch):
  """(z1, z2): each of `batch`'s views through `model` at `state` on its
  own, in training mode, as the step sees them."""

  @jax.jit
  def project(images):
    (_, z, _), _ = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, images,
        train=True, mutable=["batch_stats"])
    return z

  return (project(jnp.asarray(batch["view1"])),
          project(jnp.asarray(batch["view2"])))


def assert_eight_devices_match_one_device(one_device, config, metrics):
  """Global BN per view + a loss over the global batch: 8 devices give one
  device's `metrics` and states; every part of {'encoder', 'head',
  'probe'} moves."""
  method_checks.assert_matches_one_device(one_device, config, metrics,
                                          ema_target=False)
  states1, _ = one_device
  first, last = states1[0].params, states1[-1].params
  assert set(last) == {"encoder", "head", "probe"}
  method_checks.assert_every_part_moved(first, last, ("encoder", "head",
                                                      "probe"))
