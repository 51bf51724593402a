"""A parameter group frozen for its first epoch (`optim.Requests.
frozen_for_epochs`, `transforms.trained_after`; DINO's last layer) against
a NumPy transcription of torch's AdamW, whose per-parameter `step` counts
only the steps a parameter had a gradient (torch/optim/adamw.py
`_single_tensor_adamw`; DINO sets the frozen layer's grad to None,
facebookresearch/dino utils.py:144-149 @7c446df)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from contrastive_jax import optim

B1, B2, EPS = 0.9, 0.999, 1e-8


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      optimizer="adamw", learning_rate=0.1, lr_scaling="none",
      batch_size=256, weight_decay=0.04, weight_decay_end=0.4,
      momentum=0.9, warmup_epochs=1.0, lr_schedule="cosine",
      weight_decay_mask="all", clip_grad=3.0))
  config.update(overrides)
  return config


def _last(params):
  return {"body": False, "last": True}


def torch_adamw(params, grads, *, lr, wd, frozen_steps, per_parameter=True):
  """Runs torch's AdamW (float64) over `grads` (a list of {name: g}): at
  iteration i every param group gets lr[i] and weight_decay wd[i]; 'last'
  has no gradient for the first `frozen_steps` iterations, so torch skips
  it (no decay, no moments, no step). Gradients are first clipped per
  parameter to norm 3 (DINO's clip_gradients: coefficient 3 / (norm +
  1e-6) when below 1). `per_parameter=False`: one step count shared by
  every parameter (optax's count), for the comparison."""
  p = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  step = {k: 0 for k in p}
  history = []
  for i, g_all in enumerate(grads):
    for k in p:
      if k == "last" and i < frozen_steps:
        continue  # p.grad is None
      g = np.asarray(g_all[k], np.float64)
      coefficient = 3.0 / (np.linalg.norm(g) + 1e-6)
      if coefficient < 1:
        g = g * coefficient
      step[k] += 1
      t = step[k] if per_parameter else i + 1
      p[k] *= 1 - lr[i] * wd[i]
      m[k] = B1 * m[k] + (1 - B1) * g
      v[k] = B2 * v[k] + (1 - B2) * g * g
      denom = np.sqrt(v[k]) / math.sqrt(1 - B2 ** t) + EPS
      p[k] -= lr[i] / (1 - B1 ** t) * m[k] / denom
    history.append({k: x.copy() for k, x in p.items()})
  return history


def _grads(steps, seed=0):
  rng = np.random.default_rng(seed)
  return [{"body": rng.normal(size=(3, 2)) * (1 + i),
           "last": rng.normal(size=(2, 4)) * 0.5} for i in range(steps)]


def test_the_group_counts_its_own_adam_steps_as_torch():
  """3 steps per epoch, the last layer frozen for 1: warm-up, cosine lr,
  cosine weight decay and clipping, every leaf's trajectory torch's."""
  steps_per_epoch, total = 3, 8
  built = optim.optimizer_from_config(
      _config(), steps_per_epoch=steps_per_epoch, total_steps=total,
      requests=optim.Requests(frozen_for_epochs=((_last, 1.0),)))
  rng = np.random.default_rng(1)
  params = {"body": rng.normal(size=(3, 2)), "last": rng.normal(size=(2, 4))}
  grads = _grads(total)
  lr = [float(built.learning_rate(i)) for i in range(total)]
  wd = [float(built.schedules["weight_decay"](i)) for i in range(total)]
  want = torch_adamw(params, grads, lr=lr, wd=wd, frozen_steps=3)
  state = built.tx.init(jax.tree.map(jnp.asarray, params))
  update = jax.jit(built.tx.update)
  ours = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  for i in range(total):
    updates, state = update(jax.tree.map(jnp.asarray, grads[i]), state, ours)
    ours = optax.apply_updates(ours, updates)
    for k in params:
      np.testing.assert_allclose(ours[k], want[i][k], rtol=2e-5, atol=2e-6,
                                 err_msg=f"{k} at step {i}")
  np.testing.assert_array_equal(want[2]["last"], params["last"])
  # The group's own state: 8 updates seen, 5 of them its Adam's.
  inner = state[1][1]
  assert isinstance(inner, optim.TrainedAfterState)
  assert int(inner.count) == 8
  adam = [s for s in jax.tree.leaves(
      inner.inner, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert [int(s.count) for s in adam] == [5]


def test_a_shared_count_would_make_the_first_update_2_7_times_torchs():
  """After a 1,251-step epoch (ImageNet at B=1024) the shared count's first
  update of the last layer is 2.67x torch's; ours is torch's."""
  steps = 1251
  grads = [{"body": np.ones(2), "last": np.full(2, 0.5)}] * (steps + 1)
  params = {"body": np.zeros(2), "last": np.zeros(2)}
  lr, wd = [1e-3] * (steps + 1), [0.0] * (steps + 1)
  kw = dict(lr=lr, wd=wd, frozen_steps=steps)
  torch_first = torch_adamw(params, grads, **kw)[-1]["last"]
  shared_first = torch_adamw(params, grads, per_parameter=False,
                             **kw)[-1]["last"]
  assert shared_first[0] / torch_first[0] == pytest.approx(2.672, rel=1e-3)
  built = optim.optimizer_from_config(
      _config(learning_rate=1e-3, weight_decay=0.0, weight_decay_end=-1.0,
              lr_schedule="constant", warmup_epochs=0.0, clip_grad=0.0),
      steps_per_epoch=steps, total_steps=steps + 1,
      requests=optim.Requests(frozen_for_epochs=((_last, 1.0),)))
  g = jax.tree.map(jnp.asarray, grads[0])

  def body(carry, _):
    p, s = carry
    u, s = built.tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  p0 = jax.tree.map(jnp.asarray, params)
  (p, _), _ = jax.lax.scan(body, (p0, built.tx.init(p0)), None,
                           length=steps + 1)
  np.testing.assert_allclose(p["last"], torch_first, rtol=1e-5)


def test_the_cosine_floor_is_dinos_cosine_scheduler():
  """`min_learning_rate`: utils.cosine_scheduler(peak, 1e-6, epochs, niter,
  warmup_epochs) (facebookresearch/dino utils.py:187-198) after the
  warm-up, with and without one; 0 (the default) is the old schedule, and
  a floor under another schedule or below 0 is one ConfigError."""
  from contrastive_jax import schedules  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  total, peak, floor = 40, 0.5, 1e-3
  for warmup in (0, 8):
    schedule = schedules.learning_rate_schedule(
        peak_lr=peak, total_steps=total, warmup_steps=warmup,
        min_learning_rate=floor)
    iters = np.arange(total - warmup)
    want = floor + 0.5 * (peak - floor) * (1 + np.cos(np.pi * iters
                                                      / len(iters)))
    got = [float(schedule(warmup + i)) for i in iters]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert float(schedule(total)) == pytest.approx(floor)
    plain = schedules.learning_rate_schedule(
        peak_lr=peak, total_steps=total, warmup_steps=warmup)
    zero = schedules.learning_rate_schedule(
        peak_lr=peak, total_steps=total, warmup_steps=warmup,
        min_learning_rate=0.0)
    assert [float(plain(i)) for i in range(total + 1)] == [
        float(zero(i)) for i in range(total + 1)]
  for value, schedule, match in ((-1e-6, "cosine", "must be a number >= 0"),
                                 (1e-6, "constant", "needs 0")):
    with pytest.raises(ConfigError, match=match):
      optim.check_config(_config(lr_schedule=schedule,
                                 min_learning_rate=value))


def test_a_floor_above_the_scaled_peak_is_one_config_error():
  """A floor above the scaled peak would make the cosine rise (peak 0.1,
  floor 1.0: 0.1 -> 0.55 -> 1.0): one ConfigError naming both numbers. The
  peak is the scaled one: 0.1 * 512 / 256 = 0.2 takes a floor of 0.2."""
  from contrastive_jax import schedules  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError) as error:
    optim.check_config(_config(min_learning_rate=1.0))
  message = str(error.value)
  assert "min_learning_rate=1.0" in message and "0.1" in message
  assert "\n" not in message
  with pytest.raises(ConfigError, match="min_learning_rate=0.3.*0.2"):
    optim.check_config(_config(min_learning_rate=0.3, lr_scaling="linear",
                               batch_size=512))
  optim.check_config(_config(min_learning_rate=0.2, lr_scaling="linear",
                             batch_size=512))
  with pytest.raises(ConfigError, match="above the peak"):
    schedules.learning_rate_schedule(peak_lr=0.1, total_steps=10,
                                     warmup_steps=0, min_learning_rate=1.0)
  at_peak = schedules.learning_rate_schedule(
      peak_lr=0.1, total_steps=10, warmup_steps=0, min_learning_rate=0.1)
  assert [float(at_peak(i)) for i in (0, 5, 10)] == pytest.approx([0.1] * 3)
