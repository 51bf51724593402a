"""SimSiam: the loss against a float64 NumPy reference, the step on 1 and 8
devices, the stop-gradient, the predictor's constant learning rate, and the
recipes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive_jax import losses, methods, optim
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import simsiam
from tests import method_checks
from tests.test_simclr_step import fixed_batch

BATCH, SIZE = method_checks.BATCH, method_checks.SIZE


def tiny_config(**overrides):
  """The digits demo at 8 px, constant lr, no warmup: one step moves every
  parameter visibly."""
  c = method_checks.tiny_digits_config("simsiam")
  c.learning_rate, c.lr_scaling = 0.1, "none"
  c.warmup_epochs = 0.0
  c.update(overrides)
  return c


# ------------------------------------------------------------ the loss --

def reference_loss_and_grads(p1, p2, z1, z2):
  """Paper eq. (1)-(3) in float64: -(mean cos(p1, z2) + mean cos(p2, z1))/2
  and its gradient w.r.t. p1 and p2 (z is a constant):
  d cos(p, z)/dp = (z/|z| - cos(p, z) p/|p|) / |p|."""
  p1, p2, z1, z2 = (np.asarray(a, np.float64) for a in (p1, p2, z1, z2))
  n = p1.shape[0]
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)

  def cos(p, z):
    return np.sum(unit(p) * unit(z), -1)

  def grad(p, z):
    norm_p = np.linalg.norm(p, axis=-1, keepdims=True)
    return -0.5 / n * (unit(z) - cos(p, z)[:, None] * p / norm_p) / norm_p

  loss = -0.5 * (np.mean(cos(p1, z2)) + np.mean(cos(p2, z1)))
  return loss, grad(p1, z2), grad(p2, z1)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_loss_and_gradient_match_the_float64_reference(num_devices):
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (rng.normal(size=(16, 8)).astype(np.float32)
                    for _ in range(4))
  want, want_g1, want_g2 = reference_loss_and_grads(p1, p2, z1, z2)

  loss, (g1, g2, gz1, gz2) = method_checks.sharded_value_and_grads(
      functools.partial(losses.simsiam_loss, axis_name="data"),
      (p1, p2, z1, z2), num_devices)
  np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(g1, want_g1, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(g2, want_g2, rtol=1e-5, atol=1e-8)
  # The stop-gradient: no gradient reaches the projections.
  assert not np.any(gz1) and not np.any(gz2)
  # Range [-1, 1]: -1 when each prediction points at the other projection.
  assert float(losses.simsiam_loss(p1, p2, p2, p1)) == pytest.approx(-1)
  assert float(losses.simsiam_loss(p1, p2, -p2, -p1)) == pytest.approx(1)


# ------------------------------------------------------------ the step --

initial_state, one_device = method_checks.step_fixtures(tiny_config)


def test_eight_devices_match_one_device(one_device):
  # Global BN per view + a loss over the global batch.
  method_checks.assert_matches_one_device(
      one_device, tiny_config(), ("loss", "grad_norm", "probe_loss", "z_std"),
      ema_target=False)
  # Every part moved; there is no target network.
  states1, _ = one_device
  first, last = states1[0].params, states1[-1].params
  assert set(last) == {"encoder", "head", "predictor", "probe"}
  method_checks.assert_every_part_moved(first, last, method_checks.ONLINE)


def test_the_step_loss_is_the_formula_on_its_own_outputs(initial_state,
                                                          one_device):
  """The first step's loss is eq. (3) on p1 vs z2 and p2 vs z1, each view
  normalised by BN on its own; and the projector's output BN has no
  affine parameters (builder.py:35)."""
  model = simsiam.create_model(tiny_config(), axis_name=None)
  state = initial_state
  batch = fixed_batch(BATCH, SIZE, seed=1)

  @jax.jit
  def outputs(images):
    (_, z, p, _), _ = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, images,
        train=True, mutable=["batch_stats"])
    return z, p

  z1, p1 = outputs(jnp.asarray(batch["view1"]))
  z2, p2 = outputs(jnp.asarray(batch["view2"]))
  want, _, _ = reference_loss_and_grads(p1, p2, z1, z2)
  np.testing.assert_allclose(one_device[1][0]["loss"], want, rtol=1e-5)
  assert "bn_out" not in state.params["head"]
  assert "bn_out" in state.batch_stats["head"]
  assert set(state.params["predictor"]["dense2"]) == {"kernel", "bias"}
  assert set(state.params["predictor"]["dense1"]) == {"kernel"}


def test_the_predictor_keeps_the_peak_lr_as_the_rest_decays():
  """SGD with `constant_lr` on the predictor: its update is -peak * the
  momentum buffer at every step, warmup included, while the encoder's
  follows the schedule (--fix-pred-lr, main_simsiam.py:359-366); the online
  probe follows the same schedule scaled to `probe_learning_rate`, or the
  method's own when that is -1."""
  params = {"encoder": {"w": jnp.ones(3)}, "predictor": {"w": jnp.ones(3)},
            "probe": {"w": jnp.ones(3)}}
  grads = jax.tree.map(jnp.ones_like, params)
  for probe_lr, probe_ratio in ((-1.0, 1.0), (0.1, 0.25)):
    c = tiny_config(learning_rate=0.4, warmup_epochs=1.0, weight_decay=0.0,
                    momentum=0.0, probe_learning_rate=probe_lr)
    tx, schedule = optim.create_optimizer_from_config(
        c, steps_per_epoch=4, total_steps=12,
        constant_lr=simsiam.METHOD.constant_lr, probe=simsiam.METHOD.probe)
    state = tx.init(params)
    for step in range(12):
      updates, state = tx.update(grads, state, params)
      lr = float(schedule(step))
      np.testing.assert_allclose(updates["encoder"]["w"], -lr, rtol=1e-6)
      np.testing.assert_allclose(updates["probe"]["w"], -lr * probe_ratio,
                                 rtol=1e-6)
      np.testing.assert_allclose(updates["predictor"]["w"], -0.4, rtol=1e-6)
  assert float(schedule(0)) == 0.0 and float(schedule(4)) == pytest.approx(0.4)
  # With momentum and decay, the same chain as torch's SGD per group.
  c = tiny_config(learning_rate=0.4, warmup_epochs=0.0, weight_decay=0.1,
                  momentum=0.9, lr_schedule="constant")
  tx_fixed, _ = optim.create_optimizer_from_config(
      c, steps_per_epoch=4, total_steps=12,
      constant_lr=simsiam.METHOD.constant_lr)
  tx_plain, _ = optim.create_optimizer_from_config(
      c, steps_per_epoch=4, total_steps=12)
  a, b = tx_fixed.init(params), tx_plain.init(params)
  for _ in range(3):
    ua, a = tx_fixed.update(grads, a, params)
    ub, b = tx_plain.update(grads, b, params)
    method_checks.assert_trees_close(ua, ub, rtol=1e-6)
    params = optax.apply_updates(params, ua)


# ------------------------------------------------------------ config --

SIMSIAM_RECIPES = {
    "imagenet": dict(model="resnet50", cifar_stem=False, image_size=224,
                     batch_size=512, num_epochs=100, learning_rate=0.05,
                     weight_decay=1e-4, warmup_epochs=0.0,
                     input_norm="imagenet"),
    "cifar10": dict(model="resnet18", cifar_stem=True, image_size=32,
                    batch_size=256, num_epochs=1000, learning_rate=0.5,
                    weight_decay=1e-5, warmup_epochs=10.0,
                    # torchvision's defaults, solo-learn's std
                    # (tests/test_recipes_solo.py cites them).
                    zero_init_residual=False, input_norm="cifar10_solo"),
    "digits": dict(model="tiny_resnet", image_size=16, batch_size=256,
                   num_epochs=30),
}
SIMSIAM_COMMON = dict(method="simsiam", optimizer="sgd", momentum=0.9,
                      lr_scaling="linear", lr_schedule="cosine",
                      weight_decay_mask="all", conv_init="torchvision",
                      zero_init_residual=True)


@pytest.mark.parametrize("variant", sorted(SIMSIAM_RECIPES))
def test_recipe_numbers(variant):
  c = config_lib.load(f"simsiam:{variant}")
  for field, want in {**SIMSIAM_COMMON, **SIMSIAM_RECIPES[variant]}.items():
    assert c[field] == want, field
  head, pred = c.head, c.predictor
  assert (head.num_layers, head.use_bn, head.output_bn, head.output_bn_scale,
          head.output_bias, head.dense_init) == (
              3, True, True, False, False, "torch_linear")
  assert (pred.num_layers, pred.use_bn, pred.output_bn, pred.output_bias,
          pred.dense_init) == (2, True, False, True, "torch_linear")
  assert pred.output_dim == head.output_dim
  if variant != "digits":
    assert (head.hidden_dim, head.output_dim, pred.hidden_dim) == (
        2048, 2048, 512)
  ops = c.view_augment.split("|")
  assert "impl='torchvision'" in ops[0] and ops[-1] == "flip_lr(p=0.5)"
  assert ops[1] == ("color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
                    "saturation=0.4, hue=0.1, impl='torchvision')")
  assert ops[2] == "grayscale(p=0.2)"
  if variant != "digits":
    assert ops[3].startswith("gaussian_blur(p=0.5, sigma=(0.1, 2.0)")
  area = {"imagenet": "(0.2, 1.0)", "cifar10": "(0.08, 1.0)",
          "digits": "(0.25, 1.0)"}[variant]
  assert f"area={area}" in ops[0]
  config_checks.validate(c, num_devices=8, num_processes=1)
  assert optim.scaled_learning_rate(c.learning_rate, c.batch_size,
                                    c.lr_scaling) == pytest.approx(
      c.learning_rate * c.batch_size / 256)


def test_method_fields():
  method = methods.get_method("simsiam")
  params = {"encoder": {"c": 1}, "head": {"d": 2}, "predictor": {"e": 3},
            "probe": {"linear": {"kernel": 4}}}
  assert method.ema is None and method.frozen is None
  assert method.constant_lr(params) == {
      "encoder": {"c": False}, "head": {"d": False}, "predictor": {"e": True},
      "probe": {"linear": {"kernel": False}}}
  assert method.no_decay(params)["probe"]["linear"]["kernel"] is True
  assert method.pretrains_encoder and method.num_views == 2
  assert "simsiam" in methods.pretraining_methods()


@pytest.mark.parametrize("overrides,message", [
    (dict(predictor=None), "config.predictor is missing"),
    ({"predictor.hidden_dim": 0}, r"config.predictor.hidden_dim=0 .*>= 1"),
    ({"predictor.output_dim": 5}, r"must equal config.head.output_dim=64"),
    ({"predictor.dense_init": "xavier"},
     r"config.predictor.dense_init='xavier' is invalid: must be one of flax"),
])
def test_bad_simsiam_fields_name_the_field(overrides, message):
  c = config_lib.load("simsiam:digits")
  method_checks.set_fields(c, overrides)
  with pytest.raises(ConfigError, match=message):
    simsiam.validate_config(c, num_devices=1)


def test_unknown_variant():
  with pytest.raises(ValueError, match="unknown simsiam config variant"):
    config_lib.load("simsiam:imagenet800")
