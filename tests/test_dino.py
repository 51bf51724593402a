"""DINO: the loss, its gradient and the centre against a float64 NumPy
reference on 1 and 8 devices; the step on 1 and 8 devices with local crops;
no gradient into the teacher; the teacher-temperature schedule; the last
layer frozen for the first epoch. Its optimizer hook, head, drop-path and
recipes are tests/test_dino_parts.py's."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import ema, losses, optim, parallel
from contrastive_jax.methods import dino
from tests import method_checks
from tests.test_configs import load
from tests.test_simclr_step import fixed_batch

BATCH, SIZE, LOCAL = 32, 8, 4


def tiny_config(**overrides):
  """The digits demo at 8 px (local crops 4 px), a 16-output head, plain
  momentum SGD at a constant lr, a constant EMA; no frozen last layer and
  no clipping unless asked."""
  c = load("dino", "digits")
  c.image_size = SIZE
  c.view_augment = c.view_augment.replace("random_resized_crop(16,",
                                          f"random_resized_crop({SIZE},")
  c.view_augment_2 = c.view_augment_2.replace(
      "random_resized_crop(16,", f"random_resized_crop({SIZE},")
  c.extra_views = tuple(v.replace("random_resized_crop(8,",
                                  f"random_resized_crop({LOCAL},")
                        for v in c.extra_views[:2])
  c.eval_augment = f"resize({SIZE})"
  c.batch_size = BATCH
  c.head.output_dim, c.head.hidden_dim, c.head.bottleneck_dim = 16, 16, 8
  c.optimizer, c.momentum = "sgd", 0.9
  c.weight_decay, c.weight_decay_end = 1e-4, -1.0
  c.learning_rate, c.lr_scaling, c.lr_schedule = 0.1, "none", "constant"
  c.warmup_epochs = 0.0
  c.ema_momentum, c.ema_momentum_schedule = 0.9, "constant"
  c.freeze_last_layer = 0
  c.clip_grad = 0.0
  c.head.use_bn = False  # test_bn_in_the_head_is_global checks it apart
  c.update(overrides)
  return c


def multicrop_batch(seed=1):
  """fixed_batch's two global views plus two local views of 4 px."""
  batch = fixed_batch(BATCH, SIZE, seed=seed)
  rng = np.random.default_rng(seed + 100)
  for v in (3, 4):
    batch[f"view{v}"] = rng.uniform(
        size=(BATCH, LOCAL, LOCAL, 3)).astype(np.float32)
  return batch


# ------------------------------------------------------------ the loss --

def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference(student, teacher, center, *, ts=0.1, tt=0.04, m=0.9):
  """DINOLoss.forward and update_center (main_dino.py:377-412) in float64,
  the batch whole: (loss, d loss / d student, new centre)."""
  s, t, c = (np.asarray(a, np.float64) for a in (student, teacher, center))
  v, n = s.shape[:2]
  q = np.exp(_log_softmax((t - c) / tt))
  log_p = _log_softmax(s / ts)
  loss, grad, terms = 0.0, np.zeros_like(s), 0
  for iq in range(2):
    for j in range(v):
      if j == iq:
        continue
      loss += np.mean(np.sum(-q[iq] * log_p[j], -1))
      # d/ds of -q.log_softmax(s/ts) = (softmax(s/ts) - q) / ts.
      grad[j] += (np.exp(log_p[j]) - q[iq]) / ts / n
      terms += 1
  center_new = c * m + t.reshape(-1, t.shape[-1]).mean(0) * (1 - m)
  return loss / terms, grad / terms, center_new


def _sharded_loss(num_devices, student, teacher, center):
  """(loss, d loss / d student, new centre) of losses.dino_loss, the batch
  (axis 1) split over `num_devices` devices."""

  def fn(s, t):
    def loss(s):
      out = losses.dino_loss(s, t, jnp.asarray(center),
                             student_temperature=0.1,
                             teacher_temperature=0.04, axis_name="data")
      return out.loss, out.center
    (value, c), g = jax.value_and_grad(loss, has_aux=True)(s)
    return value, g, c

  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  spec = P(None, "data")
  f = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec),
                            out_specs=(P(), spec, P())))
  return jax.device_get(f(*[jax.device_put(a, NamedSharding(mesh, spec))
                            for a in (student, teacher)]))


@pytest.mark.parametrize("num_devices", [1, 8])
def test_loss_gradient_and_centre_match_the_float64_reference(num_devices):
  rng = np.random.default_rng(0)
  student = rng.normal(size=(4, 16, 12)).astype(np.float32)
  teacher = rng.normal(size=(2, 16, 12)).astype(np.float32)
  center = rng.normal(scale=0.1, size=(12,)).astype(np.float32)
  want, want_grad, want_center = reference(student, teacher, center)
  loss, grad, new_center = _sharded_loss(num_devices, student, teacher,
                                         center)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(new_center, want_center, rtol=1e-5, atol=1e-7)


def test_teacher_gets_no_gradient_from_the_loss():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(3, 4, 5)), rng.normal(size=(2, 4, 5))
  g = jax.grad(lambda t: losses.dino_loss(
      jnp.asarray(s), t, jnp.zeros(5), student_temperature=0.1,
      teacher_temperature=0.04).loss)(jnp.asarray(t))
  assert not np.any(g)


# ------------------------------------------------------------ the step --

def run_steps(initial, config, num_devices, steps=2, *, steps_per_epoch=10):
  """`steps` steps of `config` on `multicrop_batch`, on the host."""
  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  built = dino_steps(config, mesh, steps_per_epoch)
  states, history = [initial], []
  with jax.set_mesh(mesh):
    state = jax.device_put(initial, parallel.replicated(mesh))
    batch = parallel.global_batch(multicrop_batch(), mesh)
    for _ in range(steps):
      state, metrics = built.train_step(state, batch)
      states.append(jax.device_get(state))
      history.append(jax.device_get(metrics))
  return states, history


def dino_steps(config, mesh, steps_per_epoch):
  from contrastive_jax import method_steps  # pylint: disable=g-import-not-at-top
  return method_steps.build(config, mesh, steps_per_epoch=steps_per_epoch,
                            total_steps=100, guard=False)


@pytest.fixture(scope="module", name="initial_state")
def initial_state_fixture():
  return method_checks.initial_state(tiny_config())


@pytest.fixture(scope="module", name="one_device")
def one_device_fixture(initial_state):
  return run_steps(initial_state, tiny_config(), 1)


def test_eight_devices_match_one_device(one_device):
  # Global BN per resolution, the loss and the centre over the global
  # batch: sharding changes nothing, the centre and the teacher included.
  states1, hist1 = one_device
  states8, hist8 = run_steps(states1[0], tiny_config(), 8)
  method_checks.assert_metrics_close(
      hist1, hist8, ("loss", "grad_norm", "probe_loss", "ema_momentum",
                     "teacher_temperature"))
  s1, s8 = states1[-1], states8[-1]
  for a, b in ((s1.params, s8.params), (s1.batch_stats, s8.batch_stats),
               (s1.extra, s8.extra),
               (ema.target_params(s1.opt_state),
                ema.target_params(s8.opt_state))):
    method_checks.assert_trees_close(a, b)
  assert all(np.isfinite(h["loss"]) for h in hist1)


def test_bn_in_the_head_is_global_over_devices():
  # The small recipes' head (BatchNorm after its hidden layers, DINO's
  # --use_bn_in_head) normalises over the global batch: one step on 8
  # devices is the step on one, to float32 rounding of the BN sums.
  config = tiny_config()
  config.head.use_bn = True
  initial = method_checks.initial_state(config)
  assert initial.batch_stats["head"]  # its BN statistics
  (_, s1), h1 = run_steps(initial, config, 1, steps=1)
  (_, s8), h8 = run_steps(initial, config, 8, steps=1)
  np.testing.assert_allclose(h8[0]["loss"], h1[0]["loss"], rtol=1e-5)
  for a, b in ((s1.params, s8.params), (s1.batch_stats, s8.batch_stats),
               (s1.extra, s8.extra)):
    method_checks.assert_trees_close(a, b, atol=1e-5)


def test_state_teacher_and_centre(initial_state, one_device):
  states, history = one_device
  assert set(initial_state.params) == {"encoder", "head", "probe"}
  assert not np.any(initial_state.extra["center"])
  assert initial_state.extra["center"].shape == (16,)
  # The teacher: an EMA of the student's encoder and head, m 0.9.
  for before, after in zip(states, states[1:]):
    t0, t1 = (ema.target_params(s.opt_state) for s in (before, after))
    assert set(t1) == {"encoder", "head"}
    for a, q, b in zip(jax.tree.leaves(t0),
                       jax.tree.leaves(dino.METHOD.ema(after.params)),
                       jax.tree.leaves(t1)):
      np.testing.assert_allclose(b, 0.9 * a + 0.1 * q, rtol=1e-5, atol=1e-6)
    # The centre moved.
    assert np.any(after.extra["center"] != before.extra["center"])
  method_checks.assert_every_part_moved(
      states[0].params, states[-1].params, ("encoder", "head", "probe"))
  # The evaluated encoder is the teacher's.
  as_dict = {"params": states[-1].params, "extra": states[-1].extra,
             "opt_state": states[-1].opt_state}
  got = dino.METHOD.encoder_variables(as_dict)["params"]
  method_checks.assert_trees_close(
      ema.target_params(states[-1].opt_state)["encoder"], got, rtol=0,
      atol=0)


def test_step_loss_is_the_reference_on_its_outputs(initial_state,
                                                    one_device):
  """The step's first loss is DINOLoss of the student's logits of all 4
  crops and the teacher's of the 2 global ones; no gradient reaches the
  teacher's parameters."""
  config = tiny_config()
  model = dino.create_model(config, axis_name=None)
  state = initial_state
  batch = {k: jnp.asarray(v) for k, v in multicrop_batch().items()}
  target = ema.target_params(state.opt_state)
  rngs = {"dropout": jax.random.PRNGKey(0),
          "drop_path": jax.random.PRNGKey(1)}

  def loss(params, target_params):
    return dino.loss_fn(params, target_params, batch,
                        batch_stats=state.batch_stats, extra=state.extra,
                        rngs=rngs, model=model, config=config,
                        teacher_temp=0.04, axis_name=None)

  @jax.jit  # XLA:CPU compiles these faster than it runs them op by op.
  def grad_and_outputs(params, target):
    g_target, aux = jax.grad(loss, argnums=1, has_aux=True)(params, target)
    views = dino.views_of(batch)
    s = model.student.apply({"params": params,
                             "batch_stats": state.batch_stats}, views,
                            train=True, mutable=["batch_stats"])[0][0]
    t = model.teacher.apply(
        {"params": target, "batch_stats": state.extra["target_batch_stats"]},
        views[:2], train=True, mutable=["batch_stats"])[0][0]
    return g_target, aux, s, t

  g_target, aux, s, t = grad_and_outputs(state.params, target)
  assert all(not np.any(g) for g in jax.tree.leaves(g_target))
  want, _, want_center = reference(s.reshape(4, BATCH, -1),
                                   t.reshape(2, BATCH, -1),
                                   state.extra["center"])
  np.testing.assert_allclose(aux.loss, want, rtol=1e-5)
  np.testing.assert_allclose(one_device[1][0]["loss"], want, rtol=1e-5)
  np.testing.assert_allclose(aux.center, want_center, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module", name="two_epochs")
def two_epochs_fixture():
  """3 steps at 2 steps per epoch (steps 0 and 1 are epoch 0) of AdamW
  with decay, clipped, as the ViT recipe, the last layer frozen for 1
  epoch and the teacher temperature warmed up over 3: one compile for
  the two tests below."""
  config = tiny_config(freeze_last_layer=1, optimizer="adamw",
                       learning_rate=1e-3, weight_decay=0.04,
                       weight_decay_end=0.4, clip_grad=3.0,
                       warmup_teacher_temperature_epochs=3,
                       warmup_teacher_temperature=0.04,
                       teacher_temperature=0.07)
  return run_steps(method_checks.initial_state(config), config, 1,
                   steps=3, steps_per_epoch=2)


def test_last_layer_is_frozen_for_the_first_epoch(two_epochs):
  # Neither gradient nor decay moves it; its AdamW starts counting when
  # it trains (torch's per-parameter step, tests/test_frozen_group_adam.py).
  states, _ = two_epochs
  last = lambda s: s.params["head"]["last_layer"]["kernel"]
  np.testing.assert_array_equal(last(states[1]), last(states[0]))
  np.testing.assert_array_equal(last(states[2]), last(states[0]))
  assert np.any(last(states[3]) != last(states[2]))
  # The rest of the head trained from the first step.
  assert np.any(states[1].params["head"]["dense1"]["kernel"]
                != states[0].params["head"]["dense1"]["kernel"])
  group = [s for s in jax.tree.leaves(
      states[3].opt_state,
      is_leaf=lambda x: isinstance(x, optim.TrainedAfterState))
           if isinstance(s, optim.TrainedAfterState)]
  adam = [s for s in jax.tree.leaves(
      group[0].inner, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert (int(group[0].count), [int(a.count) for a in adam]) == (3, [1])


# ------------------------------------------------------- the schedules --

def test_teacher_temperature_is_the_reference_schedule_per_epoch():
  # np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(270) * 0.07))
  # (main_dino.py:370-375), indexed by the epoch (:380).
  want = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(270) * 0.07))
  got = [float(dino.teacher_temperature(e, warmup=0.04, final=0.07,
                                        warmup_epochs=30))
         for e in range(300)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(dino.teacher_temperature(
      0, warmup=0.04, final=0.07, warmup_epochs=0)) == pytest.approx(0.07)
  assert [float(dino.teacher_temperature(e, warmup=0.04, final=0.07,
                                         warmup_epochs=1))
          for e in (0, 1)] == pytest.approx([0.04, 0.07])


def test_step_uses_the_integer_epoch(two_epochs):
  _, history = two_epochs
  assert [float(h["teacher_temperature"]) for h in history] == (
      pytest.approx([0.04, 0.04, 0.055]))
