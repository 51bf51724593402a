"""DINO's parts outside the step: its optimizer hook (the lr floor, the
default factory with the last layer frozen, DINO's parameter groups), the
head against NumPy, drop-path, and the recipes and their config checks.
The loss and the step are tests/test_dino.py's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax import optim
from contrastive_jax.config import checks as config_checks
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import dino
from contrastive_jax.models import heads, vit
from tests import method_checks
from tests.test_configs import load
from tests.test_dino import tiny_config


# ------------------------------------------------------- the optimizer --

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
  update1, update2 = jax.jit(ours.update), jax.jit(theirs.update)
  for step in range(4):
    grads = jax.tree.map(lambda p: p * (step + 1.5), params)
    u1, s1 = update1(grads, s1, params)
    u2, s2 = update2(grads, s2, params)
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
  p = jax.jit(lambda x: head.init(jax.random.PRNGKey(0), x, train=True))(
      jnp.zeros((1, 512)))["params"]
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
  variables = jax.jit(lambda x: default.init(jax.random.PRNGKey(0), x,
                                             train=False))(images)
  dropping = vit.TinyViT(drop_path_rate=0.5)
  # The same variables (drop-path has none): checkpoints do not change.
  assert (jax.tree.structure(jax.eval_shape(
      lambda x: dropping.init(jax.random.PRNGKey(0), x, train=False), images))
          == jax.tree.structure(variables))

  @jax.jit  # One compile instead of four applies op by op.
  def outputs(variables, images):
    rngs = {"drop_path": jax.random.PRNGKey(3)}
    return (default.apply(variables, images, train=False),
            default.apply(variables, images, train=True),
            dropping.apply(variables, images, train=False),
            dropping.apply(variables, images, train=True, rngs=rngs))

  want, default_train, dropping_eval, got = outputs(variables, images)
  # Rate 0, or evaluation: no rng needed, the same function.
  np.testing.assert_array_equal(default_train, want)
  np.testing.assert_array_equal(dropping_eval, want)
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
