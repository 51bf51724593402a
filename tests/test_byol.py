"""BYOL: the loss against a float64 NumPy reference, the step on 1 and 8
devices, what the EMA follows, the stop-gradient, and the recipes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import ema, losses, method_steps, methods, optim, parallel
from contrastive_jax.config import checks as config_checks
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import byol
from tests.test_configs import load
from tests.test_simclr_step import fixed_batch

BATCH, SIZE, STEPS = 32, 8, 2


def tiny_config(**overrides):
  """The digits demo at 8 px, with plain momentum SGD and a constant lr and
  EMA so that one step moves every parameter visibly."""
  c = load("byol", "digits")
  c.image_size = SIZE
  for field in ("view_augment", "view_augment_2"):
    c[field] = c[field].replace("random_resized_crop(16,",
                                f"random_resized_crop({SIZE},")
  c.eval_augment = f"resize({SIZE})"
  c.batch_size = BATCH
  c.optimizer = "sgd"
  c.learning_rate, c.lr_scaling, c.lr_schedule = 0.1, "none", "constant"
  c.warmup_epochs = 0.0
  c.weight_decay = 1e-4
  c.ema_momentum, c.ema_momentum_schedule = 0.9, "constant"
  c.update(overrides)
  return c


# ------------------------------------------------------------ the loss --

def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_loss_and_grads(p1, p2, z1, z2):
  """Paper eq. (2), symmetrised (§3.1), in float64: mean over images of
  (2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1)); and its gradient w.r.t. p1
  and p2, d/dp [-2 p.z / (|p| |z|)] / N (z is a constant)."""
  p1, p2, z1, z2 = (np.asarray(a, np.float64) for a in (p1, p2, z1, z2))
  n = p1.shape[0]

  def cos(p, z):
    return np.sum(p * z, -1) / (np.linalg.norm(p, axis=-1) *
                                np.linalg.norm(z, axis=-1))

  def grad(p, z):
    norm_p = np.linalg.norm(p, axis=-1, keepdims=True)
    return -2.0 / n * (_unit(z) - cos(p, z)[:, None] * p / norm_p) / norm_p

  loss = np.mean((2 - 2 * cos(p1, z2)) + (2 - 2 * cos(p2, z1)))
  return loss, grad(p1, z2), grad(p2, z1)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_loss_and_gradient_match_the_float64_reference(num_devices):
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (rng.normal(size=(16, 8)).astype(np.float32)
                    for _ in range(4))
  want, want_g1, want_g2 = reference_loss_and_grads(p1, p2, z1, z2)

  def loss_and_grads(p1, p2, z1, z2):
    return jax.value_and_grad(
        lambda *a: losses.byol_loss(*a, axis_name="data"),
        argnums=(0, 1, 2, 3))(p1, p2, z1, z2)

  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  fn = jax.jit(jax.shard_map(loss_and_grads, mesh=mesh,
                             in_specs=(P("data"),) * 4,
                             out_specs=(P(), (P("data"),) * 4)))
  args = [jax.device_put(a, NamedSharding(mesh, P("data")))
          for a in (p1, p2, z1, z2)]
  loss, (g1, g2, gz1, gz2) = jax.device_get(fn(*args))
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(g1, want_g1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g2, want_g2, rtol=1e-5, atol=1e-7)
  # The targets are constants: stop_gradient inside the loss.
  assert not np.any(gz1) and not np.any(gz2)
  # Unscaled: identical predictions and targets give 0, opposite ones 8.
  assert float(losses.byol_loss(p1, p2, p2, p1)) == pytest.approx(0, abs=1e-6)
  assert float(losses.byol_loss(p1, p2, -p2, -p1)) == pytest.approx(8)


# ------------------------------------------------------------ the step --

@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
  """XLA with most optimisations off, as flax's imagenet train_test: the
  steps here compile in about half the time."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module")
def initial_state():
  """tiny_config's initial state on the host, initialised once (on one
  device) for every test here."""
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  built = method_steps.build(tiny_config(), mesh, steps_per_epoch=10,
                             total_steps=100, guard=False)
  with jax.set_mesh(mesh):
    return jax.device_get(built.init(jax.random.PRNGKey(0)))


def _run(initial, num_devices):
  """(states: the initial one and after each step, metrics of each step),
  on the host, for tiny_config on `num_devices` devices and one batch."""
  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  step = method_steps.build(tiny_config(), mesh, steps_per_epoch=10,
                            total_steps=100, guard=False).train_step
  states, history = [initial], []
  with jax.set_mesh(mesh):
    state = jax.device_put(initial, parallel.replicated(mesh))
    batch = parallel.global_batch(fixed_batch(BATCH, SIZE, seed=1), mesh)
    for _ in range(STEPS):
      state, metrics = step(state, batch)
      states.append(jax.device_get(state))
      history.append(jax.device_get(metrics))
  return states, history


@pytest.fixture(scope="module")
def one_device(initial_state):
  return _run(initial_state, 1)


def _assert_trees_close(a, b, rtol=1e-4, atol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                          jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=rtol,
                               atol=atol, err_msg=jax.tree_util.keystr(path))


def test_eight_devices_match_one_device(one_device):
  # Global BN per view + a loss over the global batch: sharding the batch
  # changes nothing.
  states1, hist1 = one_device
  states8, hist8 = _run(states1[0], 8)
  for h1, h8 in zip(hist1, hist8):
    for name in ("loss", "grad_norm", "probe_loss", "ema_momentum"):
      np.testing.assert_allclose(h8[name], h1[name], rtol=1e-4, err_msg=name)
  s1, s8 = states1[-1], states8[-1]
  _assert_trees_close(s1.params, s8.params)
  _assert_trees_close(s1.batch_stats, s8.batch_stats)
  _assert_trees_close(s1.extra, s8.extra)
  _assert_trees_close(ema.target_params(s1.opt_state),
                      ema.target_params(s8.opt_state))
  assert all(np.isfinite(h["loss"]) for h in hist1)


def test_the_target_is_an_ema_of_encoder_and_projector_only(one_device):
  states, history = one_device
  for before, after, metrics in zip(states, states[1:], history):
    target0 = ema.target_params(before.opt_state)
    target1 = ema.target_params(after.opt_state)
    # Only the encoder and the projector have a target; the predictor and
    # the online probe have none, anywhere in the optimizer state.
    assert set(target1) == {"encoder", "head"}
    assert set(after.params) == {"encoder", "head", "predictor", "probe"}
    assert set(after.extra["target_batch_stats"]) == {"encoder", "head"}
    for k in ("encoder", "head"):
      assert (jax.tree.structure(target1[k])
              == jax.tree.structure(after.params[k]))
    # target <- m target + (1 - m) online, towards the updated online net.
    m = float(metrics["ema_momentum"])
    assert m == pytest.approx(0.9)
    for t0, q1, t1 in zip(jax.tree.leaves(target0),
                          jax.tree.leaves(byol.METHOD.ema(after.params)),
                          jax.tree.leaves(target1)):
      np.testing.assert_allclose(t1, m * t0 + (1 - m) * q1, rtol=1e-5,
                                 atol=1e-6)
  # Every online part moved, the predictor included.
  first, last = states[0].params, states[-1].params
  for k in ("encoder", "head", "predictor", "probe"):
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(first[k]),
                                              jax.tree.leaves(last[k]))), k
  assert int(ema.ema_state(states[-1].opt_state).count) == STEPS


def test_target_gets_no_gradient_and_the_views_pair_up(initial_state,
                                                        one_device):
  """The loss's gradient w.r.t. the target is zero; and the step's first
  loss is the paper's formula on p1 vs z'2 and p2 vs z'1, each network
  normalising each view's batch on its own."""
  model = byol.create_model(tiny_config(), axis_name=None)
  state = initial_state
  batch = {k: jnp.asarray(v)
           for k, v in fixed_batch(BATCH, SIZE, seed=1).items()}

  @jax.jit
  def target_grads_and_outputs(params, target_params):
    # Only w.r.t. the target: without the stop-gradient JAX would
    # differentiate through the target network here.
    grads, aux = jax.grad(
        functools.partial(byol.loss_fn, model=model, axis_name=None),
        argnums=1, has_aux=True)(
            params, target_params, batch, batch_stats=state.batch_stats,
            extra=state.extra)
    online = lambda x: model.online.apply(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True,
        mutable=["batch_stats"])[0][2]
    target = lambda x: model.target.apply(
        {"params": target_params,
         "batch_stats": state.extra["target_batch_stats"]}, x, train=True,
        mutable=["batch_stats"])[0][1]
    return grads, aux.loss, [online(batch["view1"]), online(batch["view2"]),
                             target(batch["view1"]), target(batch["view2"])]

  g_target, loss, outputs = jax.device_get(target_grads_and_outputs(
      state.params, ema.target_params(state.opt_state)))
  assert set(g_target) == {"encoder", "head"}
  assert all(not np.any(g) for g in jax.tree.leaves(g_target))
  want, _, _ = reference_loss_and_grads(*outputs)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(one_device[1][0]["loss"], want, rtol=1e-5)


# ------------------------------------------------------------ config --

# Every number of each recipe (README "BYOL: per config" cites them).
BYOL_RECIPES = {
    "imagenet1000": dict(model="resnet50", cifar_stem=False, image_size=224,
                         batch_size=4096, num_epochs=1000, learning_rate=0.2,
                         weight_decay=1.5e-6, ema_momentum=0.996,
                         input_norm="imagenet"),
    "imagenet": dict(model="resnet50", cifar_stem=False, image_size=224,
                     batch_size=4096, num_epochs=300, learning_rate=0.3,
                     weight_decay=1e-6, ema_momentum=0.99,
                     input_norm="imagenet"),
    "cifar10": dict(model="resnet18", cifar_stem=True, image_size=32,
                    batch_size=256, num_epochs=1000, learning_rate=1.0,
                    weight_decay=1e-5, ema_momentum=0.99,
                    input_norm="cifar10"),
    "digits": dict(model="tiny_resnet", image_size=16, batch_size=256,
                   num_epochs=30),
}
BYOL_COMMON = dict(method="byol", optimizer="lars", momentum=0.9,
                   lr_scaling="linear", lr_schedule="cosine",
                   ema_momentum_schedule="cosine",
                   weight_decay_mask="exclude_bn_bias", conv_init="simclr",
                   zero_init_residual=True)


@pytest.mark.parametrize("variant", sorted(BYOL_RECIPES))
def test_recipe_numbers(variant):
  c = load("byol", variant)
  for field, want in {**BYOL_COMMON, **BYOL_RECIPES[variant]}.items():
    assert c[field] == want, field
  if variant != "digits":
    assert c.warmup_epochs == 10.0
    assert (c.head.hidden_dim, c.head.output_dim,
            c.predictor_hidden_dim) == (4096, 256, 4096)
  assert (c.head.num_layers, c.head.use_bn, c.head.output_bn,
          c.head.output_bias) == (2, True, False, False)
  view1, view2 = c.view_augment.split("|"), c.view_augment_2.split("|")
  jitter = ("color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
            "saturation=0.2, hue=0.1, impl='{}')").format(
                "torchvision" if variant == "cifar10" else "simclr_v1")
  for ops in (view1, view2):
    assert ops[1:4] == ["flip_lr(p=0.5)", jitter, "grayscale(p=0.2)"]
    assert "impl='torchvision'" in ops[0]
  blur = (0.0, 0.0) if variant == "cifar10" else (1.0, 0.1)
  assert view1[4].startswith(f"gaussian_blur(p={blur[0]}, sigma=(0.1, 2.0)")
  assert view2[4].startswith(f"gaussian_blur(p={blur[1]}, sigma=(0.1, 2.0)")
  assert view1[5] == "solarize(p=0.0, threshold=0.5)"
  assert view2[5] == "solarize(p=0.2, threshold=0.5)"
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_reference_schedules():
  c = load("byol")  # the default: the reference's 1000-epoch preset
  assert c.num_epochs == 1000
  assert optim.scaled_learning_rate(
      c.learning_rate, c.batch_size, c.lr_scaling) == pytest.approx(3.2)
  # tau = 1 - (1 - base) (cos(pi k / K) + 1) / 2 (schedules.py:20-24).
  tau = ema.momentum_schedule(c.ema_momentum, c.ema_momentum_schedule, 100)
  assert [float(tau(k)) for k in (0, 50, 100, 200)] == pytest.approx(
      [0.996, 0.998, 1.0, 1.0])


def test_method_asks_for_ema_of_encoder_and_head_and_no_probe_decay():
  method = methods.get_method("byol")
  params = {"encoder": {"c": 1}, "head": {"d": 2}, "predictor": {"e": 3},
            "probe": {"linear": {"kernel": 4}}}
  assert method.ema(params) == {"encoder": {"c": 1}, "head": {"d": 2}}
  assert method.no_decay(params)["probe"]["linear"]["kernel"] is True
  assert method.no_decay(params)["predictor"]["e"] is False
  assert method.pretrains_encoder and method.num_views == 2
  state = {"params": params, "batch_stats": {"encoder": {"m": 0}}}
  assert method.encoder_variables(state) == {"params": {"c": 1},
                                             "batch_stats": {"m": 0}}


@pytest.mark.parametrize("overrides,field,message", [
    (dict(predictor_hidden_dim=0), "predictor_hidden_dim", "integer >= 1"),
    (dict(ema_momentum=1.5), "ema_momentum", r"\[0, 1\]"),
    (dict(ema_momentum_schedule="linear"), "ema_momentum_schedule",
     "constant, cosine"),
])
def test_bad_byol_fields_name_the_field(overrides, field, message):
  c = load("byol", "digits")
  c.update(overrides)
  with pytest.raises(ConfigError, match=f"config.{field}=.*{message}"):
    config_checks.validate(c, num_devices=1, num_processes=1)


def test_unknown_variant():
  with pytest.raises(ValueError, match="unknown byol config variant"):
    load("byol", "cifar100")
