"""Barlow Twins: the loss and its gradient against a float64 NumPy reference
on 1 and 8 devices, the step on 1 and 8 devices, the biases' and BN's own
learning rate, and the recipes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax import losses, methods
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import barlow_twins, joint_embedding
from tests import joint_embedding_checks as checks
from tests import method_checks
from tests.test_simclr_step import fixed_batch

BATCH, SIZE = checks.BATCH, checks.SIZE


def tiny_config(**overrides):
  """The digits demo at 8 px with a 16-wide projector, constant lr, no
  warmup: one step moves every parameter visibly."""
  c = checks.tiny_digits_config("barlow_twins")
  c.head.hidden_dim = c.head.output_dim = 16
  c.learning_rate, c.bias_learning_rate, c.lr_scaling = 0.1, 0.01, "none"
  c.warmup_epochs = 0.0
  c.update(overrides)
  return c


# ------------------------------------------------------------ the loss --

def reference_loss(z1, z2, lambd):
  """facebookresearch/barlowtwins main.py:211-220 in float64: BatchNorm1d
  without affine (biased variance, eps 1e-5) of each view, c = bn(z1)^T
  bn(z2) / N, sum (1 - c_ii)^2 + lambd sum_{i != j} c_ij^2."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  bn = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
  c = bn(z1).T @ bn(z2) / z1.shape[0]
  on = np.sum((np.diagonal(c) - 1) ** 2)
  off = np.sum(c ** 2) - np.sum(np.diagonal(c) ** 2)
  return on + lambd * off


@pytest.mark.parametrize("num_devices", [1, 8])
def test_loss_and_gradient_match_the_float64_reference(num_devices):
  rng = np.random.default_rng(0)
  # Correlated views, so that c is far from both 0 and the identity.
  z1 = rng.normal(size=(16, 6))
  z2 = (0.7 * z1 + 0.5 * rng.normal(size=(16, 6))) * rng.uniform(0.5, 2, 6)
  z1, z2 = z1.astype(np.float32), z2.astype(np.float32)
  lambd = 0.3
  checks.assert_loss_and_gradient_match(
      lambda a, b: losses.barlow_twins_loss(a, b, lambd=lambd,
                                            axis_name="data").loss,
      functools.partial(reference_loss, lambd=lambd), z1, z2, num_devices)
  # The parts, and 0 for identical standardised views with no redundancy.
  terms = losses.barlow_twins_loss(z1, z2, lambd=lambd)
  np.testing.assert_allclose(terms.loss,
                             terms.on_diagonal + lambd * terms.off_diagonal)
  x = rng.normal(size=(16, 6))
  q, _ = np.linalg.qr(x - x.mean(0))  # centred orthonormal columns
  assert float(losses.barlow_twins_loss(q, q, lambd=lambd).loss) < 1e-3


# ------------------------------------------------------------ the step --

initial_state, one_device = method_checks.step_fixtures(tiny_config)


def test_eight_devices_match_one_device(one_device):
  checks.assert_eight_devices_match_one_device(
      one_device, tiny_config(),
      ("loss", "grad_norm", "probe_loss", "barlow_twins_loss",
       "bias_learning_rate"))


def test_the_step_loss_is_the_formula_on_its_own_outputs(initial_state,
                                                          one_device):
  """The first step's loss is loss_scale x the reference's loss of the
  projections, each view through the network on its own; the projector
  is Linear (no bias) -> BN -> ReLU twice, then Linear (no bias), no BN
  after it (main.py:195-202)."""
  config = tiny_config()
  model = joint_embedding.create_model(config, axis_name=None)
  state = initial_state
  z1, z2 = checks.projections(model, state,
                              fixed_batch(BATCH, SIZE, seed=1))
  metrics = one_device[1][0]
  want = reference_loss(z1, z2, config.off_diagonal_weight)
  np.testing.assert_allclose(metrics["barlow_twins_loss"], want, rtol=1e-4)
  np.testing.assert_allclose(metrics["loss"], config.loss_scale * want,
                             rtol=1e-4)
  head = state.params["head"]
  assert set(head) == {"dense1", "bn1", "dense2", "bn2", "dense3"}
  assert all(set(head[f"dense{i}"]) == {"kernel"} for i in (1, 2, 3))


def test_biases_and_bn_train_at_their_own_learning_rate():
  """LARS with the reference's two groups (main.py:90-101, :167-168):
  every 1-D parameter gets neither decay nor trust ratio and the lr
  bias_learning_rate; kernels get both at learning_rate; the probe is
  neither group's (its own, here the method's lr, no decay)."""
  c = tiny_config(learning_rate=0.4, bias_learning_rate=0.01, momentum=0.0,
                  weight_decay=0.1, warmup_epochs=1.0,
                  probe_learning_rate=-1.0)
  built = barlow_twins.METHOD.optimizer(
      c, steps_per_epoch=4, total_steps=12,
      requests=barlow_twins.METHOD.optimizer_requests)
  params = {"encoder": {"conv": {"kernel": jnp.full((2, 2), 2.0)},
                        "bn1": {"scale": jnp.ones(2), "bias": jnp.ones(2)}},
            "head": {"dense1": {"kernel": jnp.full((2, 2), 2.0),
                                "bias": jnp.ones(2)}},
            "probe": {"linear": {"kernel": jnp.ones((2, 2)),
                                 "bias": jnp.ones(2)}}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  state = built.tx.init(params)
  for step in range(6):
    updates, state = built.tx.update(grads, state, params)
    lr = float(built.learning_rate(step))
    assert float(built.schedules["bias_learning_rate"](step)) == (
        pytest.approx(lr * 0.01 / 0.4))
    for leaf in (updates["encoder"]["bn1"]["scale"],
                 updates["encoder"]["bn1"]["bias"],
                 updates["head"]["dense1"]["bias"]):
      np.testing.assert_allclose(leaf, -lr * 0.025 * 0.5, rtol=1e-6)
    # eta |w| / |g + wd w| (g + wd w) = eta |w| along g + wd w.
    np.testing.assert_allclose(updates["head"]["dense1"]["kernel"],
                               -lr * 1e-3 * 4.0 / 2, rtol=1e-5)
    np.testing.assert_allclose(updates["probe"]["linear"]["kernel"],
                               -lr * 0.5, rtol=1e-6)
    np.testing.assert_allclose(updates["probe"]["linear"]["bias"],
                               -lr * 0.5, rtol=1e-6)
  assert built.learning_rate(0) == 0.0


# ------------------------------------------------------------ config --

RECIPES = {
    "imagenet": dict(model="resnet50", cifar_stem=False, image_size=224,
                     batch_size=2048, num_epochs=1000, learning_rate=0.2,
                     bias_learning_rate=0.0048, weight_decay=1e-6,
                     loss_scale=1 / 16, input_norm="imagenet", optimizer="lars",
                     zero_init_residual=True),
    "cifar10": dict(model="resnet18", cifar_stem=True, image_size=32,
                    batch_size=256, num_epochs=1000, learning_rate=0.3,
                    bias_learning_rate=0.3, weight_decay=1e-4,
                    loss_scale=0.1, input_norm="cifar10_solo",  # solo's std
                    # solo-learn's LARS (scripts/pretrain/cifar/*.yaml):
                    optimizer="lars_solo", lars_eta=0.02, lars_clip_lr=True,
                    zero_init_residual=False),
    "digits": dict(model="tiny_resnet", image_size=16, batch_size=256,
                   num_epochs=30, optimizer="lars"),
}
COMMON = dict(method="barlow_twins", momentum=0.9,
              lr_scaling="linear", lr_schedule="cosine",
              weight_decay_mask="exclude_bn_bias", conv_init="torchvision",
              off_diagonal_weight=0.0051)


@pytest.mark.parametrize("variant", sorted(RECIPES))
def test_recipe_numbers(variant):
  c = config_lib.load(f"barlow_twins:{variant}")
  for field, want in {**COMMON, **RECIPES[variant]}.items():
    assert c[field] == want, field
  if variant != "digits":
    assert c.warmup_epochs == 10.0
  head = c.head
  assert (head.num_layers, head.use_bn, head.output_bn, head.dense_init) == (
      3, True, False, "torch_linear")
  solo = variant == "cifar10"
  assert (head.hidden_bias, head.output_bias) == (solo, solo)
  if variant != "digits":
    width = {"imagenet": 8192, "cifar10": 2048}[variant]
    assert (head.hidden_dim, head.output_dim) == (width, width)
  v1, v2 = c.view_augment.split("|"), c.view_augment_2.split("|")
  assert v1[1] == "flip_lr(p=0.5)" and v1[3] == "grayscale(p=0.2)"
  assert v1[2] == ("color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
                   "saturation=0.2, hue=0.1, impl='torchvision')")
  assert "method='bicubic'" in v1[0] and "impl='torchvision'" in v1[0]
  assert v2[-1] == "solarize(p=0.2, threshold=0.5)"
  if variant == "imagenet":
    assert v1[4].startswith("gaussian_blur(p=1.0,") and len(v1) == 5
    assert v2[4].startswith("gaussian_blur(p=0.1,")
  if variant == "cifar10":
    assert not any("blur" in op for op in v1 + v2)
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_method_fields():
  method = methods.get_method("barlow_twins")
  assert method.ema is None and method.frozen is None
  assert method.pretrains_encoder and method.num_views == 2
  assert "barlow_twins" in methods.pretraining_methods()
  params = {"encoder": {"k": jnp.ones((2, 2)), "b": jnp.ones(2)},
            "probe": {"b": jnp.ones(2)}}
  assert barlow_twins.bias_and_norm(params) == {
      "encoder": {"k": False, "b": True}, "probe": {"b": False}}


@pytest.mark.parametrize("overrides,message", [
    (dict(off_diagonal_weight=-1.0),
     r"config.off_diagonal_weight=-1.0 is invalid: must be a finite number "
     r">= 0"),
    (dict(loss_scale=0.0), r"config.loss_scale=0.0 is invalid: .*> 0"),
    (dict(bias_learning_rate=-0.1),
     r"config.bias_learning_rate=-0.1 is invalid: must be a finite number > 0"),
    (dict(batch_size=1), r"config.batch_size=1 is invalid: Barlow Twins"),
])
def test_bad_fields_name_the_field(overrides, message):
  c = config_lib.load("barlow_twins:digits")
  c.update(overrides)
  with pytest.raises(ConfigError, match=message):
    barlow_twins.METHOD.validate_config(c, num_devices=1)
