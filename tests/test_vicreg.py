"""VICReg: the loss and its gradient against a float64 NumPy reference on 1
and 8 devices, the step on 1 and 8 devices, and the recipes."""

import functools

import numpy as np
import pytest

from contrastive_jax import losses, methods
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import joint_embedding, vicreg
from tests import joint_embedding_checks as checks
from tests import method_checks
from tests.test_simclr_step import fixed_batch

BATCH, SIZE = checks.BATCH, checks.SIZE


def tiny_config(**overrides):
  """The digits demo at 8 px with a 16-wide projector, constant lr, no
  warmup: one step moves every parameter visibly."""
  c = checks.tiny_digits_config("vicreg")
  c.head.hidden_dim = c.head.output_dim = 16
  c.learning_rate, c.lr_scaling = 0.1, "none"
  c.warmup_epochs = 0.0
  c.update(overrides)
  return c


# ------------------------------------------------------------ the loss --

def reference_terms(z1, z2):
  """facebookresearch/vicreg main_vicreg.py:198-213 in float64, on the
  whole batch: (MSE, std hinge averaged over the views with torch's
  unbiased var, off-diagonal covariance / (N - 1) squared / d summed over
  the views)."""
  x, y = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n, d = x.shape
  repr_loss = np.mean((x - y) ** 2)
  x, y = x - x.mean(0), y - y.mean(0)
  std_x = np.sqrt(x.var(0, ddof=1) + 1e-4)
  std_y = np.sqrt(y.var(0, ddof=1) + 1e-4)
  relu = lambda a: np.maximum(a, 0)
  std_loss = np.mean(relu(1 - std_x)) / 2 + np.mean(relu(1 - std_y)) / 2
  off = lambda m: np.sum(m ** 2) - np.sum(np.diagonal(m) ** 2)
  cov_loss = off(x.T @ x / (n - 1)) / d + off(y.T @ y / (n - 1)) / d
  return repr_loss, std_loss, cov_loss


def reference_loss(z1, z2, weights=(25.0, 25.0, 1.0)):
  return sum(w * t for w, t in zip(weights, reference_terms(z1, z2)))


@pytest.mark.parametrize("num_devices", [1, 8])
def test_loss_and_gradient_match_the_float64_reference(num_devices):
  rng = np.random.default_rng(0)
  # Per-dimension scales across 1: the std hinge is active on some
  # dimensions only (none near its kink).
  scales = np.array([0.3, 0.5, 0.7, 1.5, 2.0, 3.0])
  z1 = rng.normal(size=(16, 6)) * scales
  z2 = z1 + 0.3 * rng.normal(size=(16, 6))
  z1, z2 = z1.astype(np.float32), z2.astype(np.float32)
  weights = (25.0, 25.0, 1.0)

  def loss_fn(a, b):
    return losses.vicreg_loss(a, b, invariance_weight=25.0,
                              variance_weight=25.0, covariance_weight=1.0,
                              axis_name="data").loss

  checks.assert_loss_and_gradient_match(
      loss_fn, functools.partial(reference_loss, weights=weights), z1, z2,
      num_devices)
  terms = losses.vicreg_loss(z1, z2, invariance_weight=1.0,
                             variance_weight=1.0, covariance_weight=1.0)
  np.testing.assert_allclose(
      (terms.invariance, terms.variance, terms.covariance),
      reference_terms(z1, z2), rtol=1e-5)


# ------------------------------------------------------------ the step --

initial_state, one_device = method_checks.step_fixtures(tiny_config)


def test_eight_devices_match_one_device(one_device):
  checks.assert_eight_devices_match_one_device(
      one_device, tiny_config(),
      ("loss", "grad_norm", "probe_loss", "invariance", "variance",
       "covariance"))


def test_the_step_loss_is_the_formula_on_its_own_outputs(initial_state,
                                                          one_device):
  """The first step's loss is the reference's on the projections, each
  view through the network on its own; the projector's hidden Linear
  layers have a bias and its last none (main_vicreg.py:223-232)."""
  model = joint_embedding.create_model(tiny_config(), axis_name=None)
  state = initial_state
  z1, z2 = checks.projections(model, state,
                              fixed_batch(BATCH, SIZE, seed=1))
  np.testing.assert_allclose(one_device[1][0]["loss"],
                             reference_loss(z1, z2), rtol=1e-4)
  head = state.params["head"]
  assert set(head) == {"dense1", "bn1", "dense2", "bn2", "dense3"}
  assert set(head["dense1"]) == set(head["dense2"]) == {"kernel", "bias"}
  assert set(head["dense3"]) == {"kernel"}


# ------------------------------------------------------------ config --

RECIPES = {
    "imagenet": dict(model="resnet50", cifar_stem=False, image_size=224,
                     batch_size=2048, num_epochs=1000, learning_rate=0.2,
                     weight_decay=1e-6, input_norm="imagenet", optimizer="lars",
                     zero_init_residual=True, variance_weight=25.0),
    "cifar10": dict(model="resnet18", cifar_stem=True, image_size=32,
                    batch_size=256, num_epochs=1000, learning_rate=0.3,
                    weight_decay=1e-4, input_norm="cifar10_solo",  # solo's std
                    # solo-learn's LARS (scripts/pretrain/cifar/*.yaml):
                    optimizer="lars_solo", lars_eta=0.02, lars_clip_lr=True,
                    zero_init_residual=False, variance_weight=50.0),
    "digits": dict(model="tiny_resnet", image_size=16, batch_size=256,
                   num_epochs=30, optimizer="lars"),
}
COMMON = dict(method="vicreg", momentum=0.9,
              lr_scaling="linear", lr_schedule="cosine",
              weight_decay_mask="exclude_bn_bias", conv_init="torchvision",
              invariance_weight=25.0, covariance_weight=1.0)


@pytest.mark.parametrize("variant", sorted(RECIPES))
def test_recipe_numbers(variant):
  c = config_lib.load(f"vicreg:{variant}")
  for field, want in {**COMMON, **RECIPES[variant]}.items():
    assert c[field] == want, field
  if variant != "digits":
    assert c.warmup_epochs == 10.0
  head = c.head
  assert (head.num_layers, head.use_bn, head.output_bn, head.hidden_bias,
          head.dense_init) == (3, True, False, True, "torch_linear")
  assert head.output_bias == (variant == "cifar10")
  if variant != "digits":
    width = {"imagenet": 8192, "cifar10": 2048}[variant]
    assert (head.hidden_dim, head.output_dim) == (width, width)
  v1, v2 = c.view_augment.split("|"), c.view_augment_2.split("|")
  assert v1[2] == ("color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
                   "saturation=0.2, hue=0.1, impl='torchvision')")
  if variant == "cifar10":  # symmetric, solarize 0.1, no blur, crop 0.2-1
    assert v1 == v2 and v1[-1] == "solarize(p=0.1, threshold=0.5)"
    assert "area=(0.2, 1.0)" in v1[0] and "blur" not in c.view_augment
  else:
    assert v2[-1] == "solarize(p=0.2, threshold=0.5)"
    assert v1[-1].startswith("gaussian_blur(p=1.0,")
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_method_fields():
  method = methods.get_method("vicreg")
  assert method.ema is None and method.frozen is None
  assert method.pretrains_encoder and method.num_views == 2
  assert "vicreg" in methods.pretraining_methods()


@pytest.mark.parametrize("overrides,message", [
    (dict(variance_weight=-1.0),
     r"config.variance_weight=-1.0 is invalid: must be a finite number >= 0"),
    (dict(covariance_weight=float("nan")), r"config.covariance_weight=nan"),
    (dict(batch_size=1), r"config.batch_size=1 is invalid: VICReg"),
])
def test_bad_fields_name_the_field(overrides, message):
  c = config_lib.load("vicreg:digits")
  c.update(overrides)
  with pytest.raises(ConfigError, match=message):
    vicreg.METHOD.validate_config(c, num_devices=1)
