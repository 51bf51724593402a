"""BYOL: the loss against a float64 NumPy reference, the step on 1 and 8
devices, what the EMA follows, the stop-gradient, and the recipes."""

import functools

import jax
import numpy as np
import pytest

from contrastive_jax import ema, losses, methods, optim
from contrastive_jax.config import checks as config_checks
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import byol
from tests import method_checks
from tests.test_configs import load
from tests.test_simclr_step import fixed_batch

BATCH, SIZE, STEPS = method_checks.BATCH, method_checks.SIZE, method_checks.STEPS


def tiny_config(**overrides):
  """The digits demo at 8 px, with plain momentum SGD and a constant lr and
  EMA so that one step moves every parameter visibly."""
  c = method_checks.tiny_digits_config("byol")
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

  loss, (g1, g2, gz1, gz2) = method_checks.sharded_value_and_grads(
      functools.partial(losses.byol_loss, axis_name="data"), (p1, p2, z1, z2),
      num_devices)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(g1, want_g1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g2, want_g2, rtol=1e-5, atol=1e-7)
  # The targets are constants: stop_gradient inside the loss.
  assert not np.any(gz1) and not np.any(gz2)
  # Unscaled: identical predictions and targets give 0, opposite ones 8.
  assert float(losses.byol_loss(p1, p2, p2, p1)) == pytest.approx(0, abs=1e-6)
  assert float(losses.byol_loss(p1, p2, -p2, -p1)) == pytest.approx(8)


# ------------------------------------------------------------ the step --

initial_state, one_device = method_checks.step_fixtures(tiny_config)


def test_eight_devices_match_one_device(one_device):
  # Global BN per view + a loss over the global batch: sharding the batch
  # changes nothing.
  method_checks.assert_matches_one_device(
      one_device, tiny_config(),
      ("loss", "grad_norm", "probe_loss", "ema_momentum"), ema_target=True)


def test_the_target_is_an_ema_of_encoder_and_projector_only(one_device):
  states, history = one_device
  # Only the encoder and the projector have a target; the predictor and
  # the online probe have none, anywhere in the optimizer state. target <-
  # m target + (1 - m) online, towards the updated online net.
  method_checks.assert_ema_of(states, history, byol.METHOD,
                              parts=("encoder", "head"), momentum=0.9)
  # Every online part moved, the predictor included.
  method_checks.assert_every_part_moved(
      states[0].params, states[-1].params, method_checks.ONLINE)
  assert int(ema.ema_state(states[-1].opt_state).count) == STEPS


def test_target_gets_no_gradient_and_the_views_pair_up(initial_state,
                                                        one_device):
  """The loss's gradient w.r.t. the target is zero; and the step's first
  loss is the paper's formula on p1 vs z'2 and p2 vs z'1, each network
  normalising each view's batch on its own."""
  model = byol.create_model(tiny_config(), axis_name=None)
  g_target, loss, outputs = method_checks.target_gradient_and_outputs(
      functools.partial(byol.loss_fn, model=model, axis_name=None),
      model.online, model.target, initial_state,
      fixed_batch(BATCH, SIZE, seed=1))
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
                    # solo-learn's LARS, torchvision's init and std
                    # (tests/test_recipes_solo.py cites them).
                    optimizer="lars_solo", lars_eta=0.02, lars_clip_lr=True,
                    conv_init="torchvision", zero_init_residual=False,
                    input_norm="cifar10_solo"),
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
