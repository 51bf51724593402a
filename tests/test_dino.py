"""DINO: the loss, its gradient and the centre against a float64 NumPy
reference on 1 and 8 devices; the step on 1 and 8 devices with local crops;
no gradient into the teacher; the teacher-temperature schedule; the last
layer frozen for the first epoch; the optimizer hook; drop-path; the head;
and the recipes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import ema, losses, optim, parallel
from contrastive_jax.config import checks as config_checks
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import dino
from contrastive_jax.models import heads, vit
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

  g_target, aux = jax.grad(loss, argnums=1, has_aux=True)(state.params,
                                                          target)
  assert all(not np.any(g) for g in jax.tree.leaves(g_target))
  views = dino.views_of(batch)
  s = model.student.apply({"params": state.params,
                           "batch_stats": state.batch_stats}, views,
                          train=True, mutable=["batch_stats"])[0][0]
  t = model.teacher.apply({"params": target,
                           "batch_stats": state.extra["target_batch_stats"]},
                          views[:2], train=True, mutable=["batch_stats"])[0][0]
  want, _, want_center = reference(s.reshape(4, BATCH, -1),
                                   t.reshape(2, BATCH, -1),
                                   state.extra["center"])
  np.testing.assert_allclose(aux.loss, want, rtol=1e-5)
  np.testing.assert_allclose(one_device[1][0]["loss"], want, rtol=1e-5)
  np.testing.assert_allclose(aux.center, want_center, rtol=1e-5, atol=1e-7)


def test_last_layer_is_frozen_for_the_first_epoch(initial_state):
  # 2 steps per epoch: steps 0 and 1 are epoch 0. AdamW with wd, clipped,
  # as the ViT recipe: neither gradient nor decay moves it.
  config = tiny_config(freeze_last_layer=1, optimizer="adamw",
                       learning_rate=1e-3, weight_decay=0.04,
                       weight_decay_end=0.4, clip_grad=3.0)
  states, _ = run_steps(method_checks.initial_state(config), config, 1,
                        steps=3, steps_per_epoch=2)
  last = lambda s: s.params["head"]["last_layer"]["kernel"]
  np.testing.assert_array_equal(last(states[1]), last(states[0]))
  np.testing.assert_array_equal(last(states[2]), last(states[0]))
  assert np.any(last(states[3]) != last(states[2]))
  # The rest of the head trained from the first step.
  assert np.any(states[1].params["head"]["dense1"]["kernel"]
                != states[0].params["head"]["dense1"]["kernel"])


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


def test_step_uses_the_integer_epoch(initial_state):
  config = tiny_config(warmup_teacher_temperature_epochs=3,
                       warmup_teacher_temperature=0.04,
                       teacher_temperature=0.07)
  _, history = run_steps(initial_state, config, 1, steps=3,
                         steps_per_epoch=2)
  assert [float(h["teacher_temperature"]) for h in history] == (
      pytest.approx([0.04, 0.04, 0.055]))


def test_learning_rate_ends_at_the_floor_as_cosine_scheduler():
  """utils.cosine_scheduler(base, 1e-6, epochs, niter, warmup_epochs)
  (utils.py:187-198) after the warm-up."""
  c = load("dino")
  c.batch_size = 256
  epochs, niter, warmup = 20, 5, 2
  c.num_epochs, c.warmup_epochs = epochs, float(warmup)
  schedule = dino.optimizer(c, steps_per_epoch=niter,
                            total_steps=epochs * niter,
                            requests=dino.METHOD.optimizer_requests
                            ).learning_rate
  iters = np.arange(epochs * niter - warmup * niter)
  want = 1e-6 + 0.5 * (5e-4 - 1e-6) * (1 + np.cos(np.pi * iters /
                                                   len(iters)))
  got = [float(schedule(warmup * niter + i)) for i in iters]
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_optimizer_is_the_default_factory_with_the_last_layer_frozen():
  """DINO's chain is optim.optimizer_from_config's with its requests and
  the last layer frozen for `freeze_last_layer` epochs: the same state and
  the same updates, the lr's floor included. (Its updates were bit-equal,
  8 steps of :vit_small's and :cifar10's optimizers, to the chain DINO
  built by hand before the floor moved into schedules.py.)"""
  c = tiny_config(optimizer="adamw", weight_decay_end=0.4, clip_grad=1.0,
                  freeze_last_layer=1, min_learning_rate=1e-4,
                  lr_schedule="cosine", warmup_epochs=1.0,
                  probe_learning_rate=0.3)
  requests = dino.METHOD.optimizer_requests
  ours = dino.optimizer(c, steps_per_epoch=2, total_steps=10,
                        requests=requests).tx
  theirs = optim.optimizer_from_config(
      c, steps_per_epoch=2, total_steps=10,
      requests=optim.Requests(**{
          **{f: getattr(requests, f) for f in ("no_decay", "probe", "ema")},
          "frozen_for_epochs": ((dino.last_layer, 1),)})).tx
  rng = np.random.default_rng(0)
  params = {"encoder": {"k": rng.normal(size=(3, 3)), "bias": np.ones(3)},
            "head": {"last_layer": {"kernel": rng.normal(size=(3, 4))}},
            "probe": {"linear": {"kernel": rng.normal(size=(3, 2))}}}
  params = jax.tree.map(jnp.asarray, params)
  s1, s2 = ours.init(params), theirs.init(params)
  assert jax.tree.structure(s1) == jax.tree.structure(s2)
  for step in range(4):
    grads = jax.tree.map(lambda p: p * (step + 1.5), params)
    u1, s1 = ours.update(grads, s1, params)
    u2, s2 = theirs.update(grads, s2, params)
    method_checks.assert_trees_close(u1, u2, rtol=1e-6, atol=0)


def test_no_decay_is_dinos_parameter_groups():
  params = {"encoder": {"cls_token": np.zeros((1, 1, 4)),
                        "norm": {"scale": np.zeros(4), "bias": np.zeros(4)},
                        "patch_embed": {"kernel": np.zeros((2, 2, 3, 4)),
                                        "bias": np.zeros(4)}},
            "head": {"last_layer": {"kernel": np.zeros((2, 3)),
                                    "gain": np.zeros((1, 3))}},
            "probe": {"linear": {"kernel": np.zeros((4, 2))}}}
  mask = dino.no_decay(params)
  assert not mask["encoder"]["cls_token"]             # decayed, as DINO
  assert mask["encoder"]["norm"]["scale"] and mask["encoder"]["norm"]["bias"]
  assert not mask["encoder"]["patch_embed"]["kernel"]
  assert mask["encoder"]["patch_embed"]["bias"]
  assert not mask["head"]["last_layer"]["gain"]       # torch's [out, 1]
  assert mask["probe"]["linear"]["kernel"]
  frozen = dino.last_layer(params)
  assert frozen["head"]["last_layer"]["kernel"]
  assert not frozen["encoder"]["cls_token"]


# ------------------------------------------------------------ the head --

@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_head_is_dinos_against_numpy(norm_last_layer):
  head = heads.DINOHead(output_dim=7, hidden_dim=6, bottleneck_dim=5,
                        norm_last_layer=norm_last_layer)
  x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
  variables = head.init(jax.random.PRNGKey(0), x, train=True)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  if not norm_last_layer:
    assert p["last_layer"]["gain"].shape == (1, 7)
    np.testing.assert_array_equal(p["last_layer"]["gain"], 1.0)
    p["last_layer"]["gain"] = p["last_layer"]["gain"] * 1.5
    variables = {"params": jax.tree.map(jnp.asarray, p)}
  else:
    assert set(p["last_layer"]) == {"kernel"}
  gelu = lambda a: a * 0.5 * (1 + np.vectorize(__import__("math").erf)(
      a / np.sqrt(2)))
  y = np.asarray(x, np.float64)
  for i in (1, 2):
    y = gelu(y @ p[f"dense{i}"]["kernel"] + p[f"dense{i}"]["bias"])
  y = y @ p["dense3"]["kernel"] + p["dense3"]["bias"]
  y = y / np.linalg.norm(y, axis=-1, keepdims=True)
  v = p["last_layer"]["kernel"]
  w = v / np.linalg.norm(v, axis=0, keepdims=True)
  if not norm_last_layer:
    w = w * p["last_layer"]["gain"]
  np.testing.assert_allclose(head.apply(variables, x, train=True), y @ w,
                             rtol=1e-5, atol=1e-6)
  # Init: N(0, 0.02^2) MLP kernels, zero biases, U(+-1/sqrt(5)) v.
  assert not np.any(p["dense1"]["bias"])
  assert np.abs(v).max() <= 1 / np.sqrt(5)


def test_head_init_std_is_point_zero_two():
  head = heads.DINOHead(output_dim=8, hidden_dim=512, bottleneck_dim=8)
  p = head.init(jax.random.PRNGKey(0), jnp.zeros((1, 512)),
                train=True)["params"]
  assert np.std(p["dense2"]["kernel"]) == pytest.approx(0.02, rel=0.02)


# ---------------------------------------------------------- drop-path --

def test_drop_path_is_per_sample_and_scaled():
  x = jnp.ones((4000, 3, 5))
  y = np.asarray(vit.drop_path(x, 0.25, jax.random.PRNGKey(0)))
  # Each example whole: all 0 or all 1 / 0.75.
  per_example = y.reshape(4000, -1)
  assert np.all(per_example == per_example[:, :1])
  np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.75],
                             rtol=1e-6)
  assert per_example[:, 0].mean() == pytest.approx(1.0, abs=0.03)


def test_vit_drop_path_off_by_default_and_zero_is_the_identity():
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 8, 8, 3)),
                       jnp.float32)
  default = vit.TinyViT()
  variables = default.init(jax.random.PRNGKey(0), images, train=False)
  dropping = vit.TinyViT(drop_path_rate=0.5)
  # The same variables (drop-path has none): checkpoints do not change.
  assert (jax.tree.structure(dropping.init(jax.random.PRNGKey(0), images,
                                           train=False))
          == jax.tree.structure(variables))
  want = default.apply(variables, images, train=False)
  # Rate 0, or evaluation: no rng needed, the same function.
  np.testing.assert_array_equal(default.apply(variables, images, train=True),
                                want)
  np.testing.assert_array_equal(dropping.apply(variables, images,
                                               train=False), want)
  rngs = {"drop_path": jax.random.PRNGKey(3)}
  got = dropping.apply(variables, images, train=True, rngs=rngs)
  assert np.any(np.asarray(got) != np.asarray(want))


def test_resnet_refuses_drop_path():
  from contrastive_jax import models  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="drop_path_rate applies to ViTs"):
    models.create_encoder("tiny_resnet", drop_path_rate=0.1)
  with pytest.raises(ConfigError, match=r"drop_path_rate must be .*\[0, 1\)"):
    models.create_encoder("tiny_vit", drop_path_rate=1.0)


# ------------------------------------------------------------ config --

DINO_RECIPES = {
    "vit_small": dict(model="vit_small", patch_size=16, image_size=224,
                      batch_size=1024, num_epochs=300, optimizer="adamw",
                      learning_rate=5e-4, weight_decay=0.04,
                      weight_decay_end=0.4, clip_grad=3.0,
                      min_learning_rate=1e-6, drop_path_rate=0.1,
                      teacher_temperature=0.07,
                      warmup_teacher_temperature_epochs=30,
                      ema_momentum=0.996, input_norm="imagenet"),
    "r50": dict(model="resnet50", image_size=224, batch_size=512,
                num_epochs=100, optimizer="sgd", momentum=0.9,
                learning_rate=0.03, weight_decay=1e-4,
                weight_decay_end=1e-4, clip_grad=3.0,
                min_learning_rate=1e-6, drop_path_rate=0.0,
                teacher_temperature=0.04,
                warmup_teacher_temperature_epochs=0, ema_momentum=0.996,
                conv_init="torchvision", zero_init_residual=False),
    "cifar10": dict(model="resnet18", cifar_stem=True, image_size=32,
                    batch_size=256, num_epochs=1000, optimizer="lars_solo",
                    lars_eta=0.02, lars_clip_lr=True, learning_rate=0.3,
                    probe_learning_rate=0.1, weight_decay=1e-6,
                    clip_grad=0.0, min_learning_rate=0.0,
                    teacher_temperature=0.07, ema_momentum=0.9995,
                    input_norm="cifar10_solo"),
    "digits": dict(model="tiny_resnet", image_size=16, batch_size=256,
                   num_epochs=30),
}


@pytest.mark.parametrize("variant", sorted(DINO_RECIPES))
def test_recipe_numbers(variant):
  c = load("dino", variant)
  common = dict(method="dino", student_temperature=0.1, center_momentum=0.9,
                warmup_teacher_temperature=0.04, freeze_last_layer=1,
                ema_momentum_schedule="cosine", lr_scaling="linear")
  for field, want in {**common, **DINO_RECIPES[variant]}.items():
    assert c[field] == want, field
  if variant in ("vit_small", "r50"):
    assert (c.head.num_layers, c.head.hidden_dim, c.head.bottleneck_dim,
            c.head.output_dim) == (3, 2048, 256, 65536)
    assert c.head.norm_last_layer == (variant == "r50")
    assert c.warmup_epochs == 10.0
    views = [c.view_augment, c.view_augment_2, *c.extra_views]
    assert len(c.extra_views) == (10 if variant == "vit_small" else 8)
    area = "(0.4, 1.0)" if variant == "vit_small" else "(0.14, 1.0)"
    assert f"random_resized_crop(224, area={area}" in views[0]
    assert "gaussian_blur(p=1.0" in views[0] and "solarize" not in views[0]
    assert "gaussian_blur(p=0.1" in views[1]
    assert "solarize(p=0.2, threshold=0.5)" in views[1]
    assert all("random_resized_crop(96," in v and "gaussian_blur(p=0.5" in v
               for v in views[2:])
    for v in views:
      assert v.split("|")[1:4] == [
          "flip_lr(p=0.5)",
          "color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
          "saturation=0.2, hue=0.1, impl='torchvision')",
          "grayscale(p=0.2)"]
  config_checks.validate(c, num_devices=8, num_processes=1)


@pytest.mark.parametrize("field,value,match", [
    ("teacher_temperature", 0.0, "teacher_temperature=0.0"),
    ("warmup_teacher_temperature_epochs", -1,
     "warmup_teacher_temperature_epochs"),
    ("center_momentum", 1.5, "center_momentum"),
    ("freeze_last_layer", -1, "freeze_last_layer"),
    ("min_learning_rate", -1e-6, "min_learning_rate"),
])
def test_bad_fields_are_config_errors(field, value, match):
  c = load("dino", "digits")
  c[field] = value
  with pytest.raises(ConfigError, match=match):
    config_checks.validate(c, num_devices=1, num_processes=1)


def test_registry_and_masks():
  from contrastive_jax import methods  # pylint: disable=g-import-not-at-top
  method = methods.get_method("dino")
  assert method.extra_views and method.pretrains_encoder
  params = {"encoder": {"c": 1}, "head": {"d": 2}, "probe": {"e": 3}}
  assert method.ema(params) == {"encoder": {"c": 1}, "head": {"d": 2}}


def test_dinos_vit_small_has_dinos_six_heads():
  """`vit_num_heads` (0: the model's own): DINO's ViT-S has 6 heads (ref
  vision_transformer.py:243-247), MoCo v3's 12; a head count that does not
  divide the width, or one given to a ResNet, is one ConfigError."""
  from contrastive_jax import models  # pylint: disable=g-import-not-at-top
  from contrastive_jax.config import lib as config_lib  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  dino = models.encoder_from_config(config_lib.load("dino:vit_small"),
                                    bn_axis_name=None)
  assert (dino.width, dino.num_heads) == (384, 6)
  moco = models.encoder_from_config(config_lib.load("moco_v3:vit_small"),
                                    bn_axis_name=None)
  assert moco.num_heads == 12
  config = config_lib.load("moco_v3:vit_small")
  config.vit_num_heads = 5
  with pytest.raises(ConfigError, match="vit_num_heads=5 does not divide"):
    models.check_config(config)
  config = config_lib.load("simclr:digits")
  config.vit_num_heads = 4
  with pytest.raises(ConfigError, match="vit_num_heads applies to ViTs"):
    models.check_config(config)
