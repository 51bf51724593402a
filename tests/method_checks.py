"""Helpers shared by the tests of the two-view methods (test_byol.py,
test_moco_v3.py, test_moco_v3_vit.py, test_simsiam.py): a loss and its
gradients on sharded inputs; a few steps of a tiny config on one fixed
batch, on 1 or 8 devices, and what the tests compare of them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import ema, method_steps, parallel
from contrastive_jax.config import lib as config_lib
from tests.test_simclr_step import fixed_batch

STEPS = 2
BATCH, SIZE = 32, 8  # The tiny step: 32 digits at 8 px.
# The online network's params in BYOL, SimSiam and MoCo v3.
ONLINE = ("encoder", "head", "predictor", "probe")


def sharded_value_and_grads(loss, args, num_devices):
  """(loss(*args), (its gradient w.r.t. each of `args`)), on the host:
  `loss` (a global loss over the axis "data") under shard_map, each of
  `args` split over the first `num_devices` devices along its first
  axis."""

  def value_and_grads(*a):
    return jax.value_and_grad(loss, argnums=tuple(range(len(a))))(*a)

  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  fn = jax.jit(jax.shard_map(value_and_grads, mesh=mesh,
                             in_specs=(P("data"),) * len(args),
                             out_specs=(P(), (P("data"),) * len(args))))
  return jax.device_get(fn(*[
      jax.device_put(a, NamedSharding(mesh, P("data"))) for a in args]))


def set_fields(config, overrides):
  """config[field] = value for each of `overrides`, a field 'block.name'
  being config[block][name] (config_lib.apply_overrides: the one way)."""
  config_lib.apply_overrides(config, overrides)


def tiny_digits_config(name: str):
  """`name:digits` at SIZE px (its crops and the eval resize) with batch
  BATCH; each test module then sets its step's numbers."""
  c = config_lib.load(f"{name}:digits")
  c.image_size = SIZE
  for field in ("view_augment", "view_augment_2"):
    c[field] = c[field].replace("random_resized_crop(16,",
                                f"random_resized_crop({SIZE},")
  c.eval_augment = f"resize({SIZE})"
  c.batch_size = BATCH
  return c


def build(config, num_devices):
  """(mesh, method_steps.build(config) on the first `num_devices`)."""
  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  return mesh, method_steps.build(config, mesh, steps_per_epoch=10,
                                  total_steps=100, guard=False)


def initial_state(config):
  """`config`'s initial state (seed 0, initialised on one device), on the
  host."""
  mesh, built = build(config, 1)
  with jax.set_mesh(mesh):
    return jax.device_get(built.init(jax.random.PRNGKey(0)))


def run_steps(initial, config, num_devices, steps=STEPS):
  """(states: `initial` and the state after each step, metrics of each
  step), on the host: `steps` steps of `config` on `num_devices` devices,
  all on one fixed batch (fixed_batch of the config's size, seed 1)."""
  mesh, built = build(config, num_devices)
  states, history = [initial], []
  with jax.set_mesh(mesh):
    state = jax.device_put(initial, parallel.replicated(mesh))
    batch = parallel.global_batch(
        fixed_batch(config.batch_size, config.image_size, seed=1), mesh)
    for _ in range(steps):
      state, metrics = built.train_step(state, batch)
      states.append(jax.device_get(state))
      history.append(jax.device_get(metrics))
  return states, history


def step_fixtures(tiny_config):
  """Module-scoped fixtures `initial_state` (`initial_state` of
  tiny_config()) and `one_device` (`run_steps` of it on one device), for a
  test module to bind: `initial_state, one_device =
  method_checks.step_fixtures(tiny_config)`. Each is computed once per
  module (per pytest-xdist worker that runs its tests)."""

  @pytest.fixture(scope="module", name="initial_state")
  def initial_state_fixture():
    return initial_state(tiny_config())

  @pytest.fixture(scope="module", name="one_device")
  def one_device_fixture(initial_state):  # pylint: disable=redefined-outer-name
    return run_steps(initial_state, tiny_config(), 1)

  return initial_state_fixture, one_device_fixture


def assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
  """`b` == `a` leaf by leaf (same structure), naming the leaf that is
  not."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                          jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=rtol,
                               atol=atol, err_msg=jax.tree_util.keystr(path))


def assert_metrics_close(hist1, hist8, names, rtol=1e-4):
  """Each step's metrics `names` of one run == the other's."""
  for h1, h8 in zip(hist1, hist8):
    for name in names:
      np.testing.assert_allclose(h8[name], h1[name], rtol=rtol, err_msg=name)


def assert_matches_one_device(one_device, config, metrics, *, ema_target):
  """`run_steps` of `config` on 8 devices from one_device's initial state
  ends where one_device ended: each step's `metrics`, the last params and
  BN statistics and, with `ema_target`, `extra` and the EMA target; and
  one_device's losses are finite. Returns the 8-device (states, history)."""
  states1, hist1 = one_device
  states8, hist8 = run_steps(states1[0], config, 8)
  assert_metrics_close(hist1, hist8, metrics)
  s1, s8 = states1[-1], states8[-1]
  assert_trees_close(s1.params, s8.params)
  assert_trees_close(s1.batch_stats, s8.batch_stats)
  if ema_target:
    assert_trees_close(s1.extra, s8.extra)
    assert_trees_close(ema.target_params(s1.opt_state),
                       ema.target_params(s8.opt_state))
  assert all(np.isfinite(h["loss"]) for h in hist1)
  return states8, hist8


def assert_ema_of(states, history, method, parts, momentum):
  """After every step the EMA target is of exactly `parts` of the online
  params (its own BN statistics likewise), each shaped as the online
  part, and it moved to m t + (1 - m) online with the step's m ==
  `momentum`, towards the updated online net. The online params are
  ONLINE: the predictor and the probe have no target."""
  for before, after, metrics in zip(states, states[1:], history):
    target0 = ema.target_params(before.opt_state)
    target1 = ema.target_params(after.opt_state)
    assert set(target1) == set(parts)
    assert set(after.params) == set(ONLINE)
    assert set(after.extra["target_batch_stats"]) == set(parts)
    for k in parts:
      assert (jax.tree.structure(target1[k])
              == jax.tree.structure(after.params[k]))
    m = float(metrics["ema_momentum"])
    assert m == pytest.approx(momentum)
    for t0, q1, t1 in zip(jax.tree.leaves(target0),
                          jax.tree.leaves(method.ema(after.params)),
                          jax.tree.leaves(target1)):
      np.testing.assert_allclose(t1, m * t0 + (1 - m) * q1, rtol=1e-5,
                                 atol=1e-6)


def assert_every_part_moved(first, last, parts):
  """Some leaf of each of `parts` differs between params `first` and
  `last`."""
  for k in parts:
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(first[k]),
                                              jax.tree.leaves(last[k]))), k


def target_gradient_and_outputs(loss_fn, online, target, state, batch):
  """At `state`, on `batch`'s two views, on the host: the gradient of
  `loss_fn` (a method's, its model bound) w.r.t. the target params only;
  its aux.loss; and [p1, p2, z1, z2], the `online` network's predictions
  and the `target`'s projections of view 1 and 2, each network normalising
  each view's batch on its own."""
  batch = {k: jnp.asarray(v) for k, v in batch.items()}

  @jax.jit
  def grads_and_outputs(params, target_params):
    # Only w.r.t. the target: without the stop-gradient JAX would
    # differentiate through the target network here.
    grads, aux = jax.grad(loss_fn, argnums=1, has_aux=True)(
        params, target_params, batch, batch_stats=state.batch_stats,
        extra=state.extra)
    predict = lambda x: online.apply(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        mutable=["batch_stats"])[0][2]
    project = lambda x: target.apply(
        {"params": target_params,
         "batch_stats": state.extra["target_batch_stats"]}, x, train=True,
        mutable=["batch_stats"])[0][1]
    return grads, aux.loss, [predict(batch["view1"]), predict(batch["view2"]),
                             project(batch["view1"]), project(batch["view2"])]

  return jax.device_get(grads_and_outputs(
      state.params, ema.target_params(state.opt_state)))
