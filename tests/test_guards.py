"""The numerical guard: a NaN batch changes nothing but the step counter and
is counted; a long enough streak stops with a clear error."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax import guards, method_steps, metric_logging, parallel
from contrastive_jax.methods import online_probe as probe_lib
from contrastive_jax.methods import simclr
from contrastive_jax.train_state import TrainState
from tests.test_simclr_step import fixed_batch, tiny_config


def _guarded_step_and_state(config, num_devices):
  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  built = method_steps.build(config, mesh, steps_per_epoch=10,
                             total_steps=100)
  state = built.init(jax.random.PRNGKey(0))
  plain = parallel.shard_train_step(built.per_device_step, mesh)
  return mesh, state, built.train_step, plain


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.mark.parametrize("num_devices", [1, 4])
def test_nan_batch_is_skipped_and_counted(num_devices):
  config = tiny_config()
  mesh, state, guarded, plain = _guarded_step_and_state(config, num_devices)
  good = fixed_batch(config.batch_size, config.image_size)
  bad = dict(good)
  bad["view1"] = good["view1"].copy()
  bad["view1"][3, 0, 0, 0] = np.nan  # one pixel of one example
  with jax.set_mesh(mesh):
    before = _host(state)
    state, metrics = guarded(state, parallel.global_batch(bad, mesh))
    after_bad = _host(state)
    assert float(metrics[guards.NONFINITE]) == 1.0
    assert not (np.isfinite(float(metrics["loss"]))
                and np.isfinite(float(metrics["grad_norm"])))
    assert int(after_bad.step) == int(before.step) + 1
    for name in ("params", "batch_stats", "opt_state", "rng", "extra"):
      for a, b in zip(jax.tree.leaves(getattr(before, name)),
                      jax.tree.leaves(getattr(after_bad, name))):
        np.testing.assert_array_equal(a, b)
    # A finite step after it is exactly the unguarded step.
    copy = jax.device_put(jax.tree.map(jnp.asarray, after_bad),
                          parallel.replicated(mesh))
    state, metrics = guarded(state, parallel.global_batch(good, mesh))
    want, _ = plain(copy, parallel.global_batch(good, mesh))
  assert float(metrics[guards.NONFINITE]) == 0.0
  for a, b in zip(jax.tree.leaves(_host(state)), jax.tree.leaves(_host(want))):
    np.testing.assert_array_equal(a, b)


def test_window_summary_counts_skipped_steps():
  rows = [{"loss": 1.0, guards.NONFINITE: f} for f in (1.0, 0.0, 1.0, 1.0)]
  summary = metric_logging.summarize(rows)
  assert summary[guards.NONFINITE] == 3.0 and summary["loss"] == 1.0


def test_streak_longer_than_the_limit_stops():
  monitor = guards.ConsecutiveNonFinite(limit=2)
  flags = [1, 1, 0, 1, 1]  # streaks of 2 are allowed
  for step, flag in enumerate(flags, 1):
    monitor.observe(step, {guards.NONFINITE: np.float32(flag)})
  monitor.flush()
  monitor.observe(6, {guards.NONFINITE: np.float32(1)})
  with pytest.raises(guards.NonFiniteError,
                     match=r"3 consecutive steps up to step 6.*"
                           r"max_consecutive_nonfinite=2"):
    monitor.flush()


def _nan_from_step_4(state, batch, **kwargs):
  new_state, metrics = simclr.train_step(state, batch, **kwargs)
  metrics["loss"] = jnp.where(state.step >= 3, jnp.nan, metrics["loss"])
  return new_state, metrics


NAN_FROM_STEP_4 = dataclasses.replace(simclr.METHOD,
                                      train_step=_nan_from_step_4)


def test_run_with_a_nan_streak_stops_and_keeps_finite_checkpoints(
    tmp_path, monkeypatch):
  # From step 4 on every loss is NaN: 4, 5 and 6 are skipped, and the 3rd
  # in a row (limit 2) stops the run before anything else is saved.
  from contrastive_jax import checkpointing, methods, train  # pylint: disable=g-import-not-at-top
  # SimCLR whose loss turns NaN, registered from outside the package as a
  # method of its own: the loop runs it without knowing it.
  monkeypatch.setitem(methods._REGISTRY, "simclr",  # pylint: disable=protected-access
                      "tests.test_guards:NAN_FROM_STEP_4")
  config = tiny_config()
  config.update(dict(num_train_steps=10, checkpoint_every_steps=2,
                     log_every_steps=1, max_consecutive_nonfinite=2,
                     online_probe=False, preview_images=0))
  config.knn.every_steps = 0
  workdir = str(tmp_path)
  with pytest.raises(guards.NonFiniteError,
                     match="3 consecutive steps up to step 6"):
    train.train_and_evaluate(config, workdir, devices=jax.devices()[:2])
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=3,
                                    read_only=True)
  assert ckpt.all_steps() == [2, 4, 6]
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  saved = {}
  for step in (4, 6):
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
        ckpt.state_metadata(step))
    saved[step] = _host(ckpt.restore(abstract, step=step))
  # Skipped updates: step 6 holds step 3's parameters, like step 4.
  for a, b in zip(jax.tree.leaves(saved[4]["params"]),
                  jax.tree.leaves(saved[6]["params"])):
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  counted = {r["step"]: r[guards.NONFINITE] for r in rows
             if guards.NONFINITE in r}
  assert [counted[s] for s in range(1, 7)] == [0, 0, 0, 1, 1, 1]


def test_grad_norm_leaves_out_the_probe_and_the_guard_checks_both():
  grads = {"encoder": {"w": jnp.array([3.0, 4.0])},
           "head": {"w": jnp.array([0.0])},
           "probe": {"w": jnp.array([12.0, 5.0])}}
  norms = probe_lib.grad_norms(grads)
  assert float(norms["grad_norm"]) == 5.0
  assert float(norms["probe_grad_norm"]) == 13.0
  assert set(probe_lib.grad_norms({"w": jnp.ones(4)})) == {"grad_norm"}

  # Only the probe's gradient is non-finite: the step is still skipped.
  state = TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.ones(2)},
                     batch_stats={}, opt_state=(), rng=jnp.zeros(2, jnp.uint32))

  def step(state, batch):
    del batch
    new = state.replace(step=state.step + 1, params={"w": jnp.zeros(2)})
    return new, {"loss": jnp.float32(1.0), "grad_norm": jnp.float32(1.0),
                 "probe_grad_norm": jnp.float32(jnp.nan)}

  kept, metrics = guards.skip_nonfinite(step, axis_name=None)(state, None)
  assert float(metrics[guards.NONFINITE]) == 1.0
  np.testing.assert_array_equal(kept.params["w"], np.ones(2))
  assert int(kept.step) == 1
