"""Every config variant loads, and holds the recipe it claims."""

import math

import pytest

from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError


def load(name: str, variant: str | None = None):
  return config_lib.module(name).get_config(variant)


REQUIRED_FIELDS = ("method", "model", "dataset", "data_dir", "image_size",
                   "batch_size", "num_epochs", "num_train_steps",
                   "learning_rate", "temperature", "seed",
                   "checkpoint_every_steps", "log_every_steps",
                   "half_precision")


@pytest.mark.parametrize("variant", [None, "cifar10", "imagenet",
                                     "imagenet1000", "digits"])
def test_simclr_variants_load_and_validate(variant):
  c = load("simclr", variant)
  for field in REQUIRED_FIELDS:
    assert field in c, field
  assert c.method == "simclr"
  assert c.num_train_steps == -1
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_simclr_cifar10_recipe():
  c = load("simclr")  # the default variant
  assert (c.dataset, c.model, c.cifar_stem) == ("cifar10", "resnet18", True)
  assert (c.batch_size, c.temperature, c.num_epochs) == (512, 0.5, 1000)
  assert c.optimizer == "lars"
  # The current official command is v2's code: multiplicative brightness.
  assert "color_jitter(0.5, p=0.8, impl='simclr_v2')" in c.view_augment
  assert "gaussian_blur" not in c.view_augment
  assert "min_object_covered=0.1, max_attempts=100" in c.view_augment
  assert "random_resized_crop(32" in c.view_augment
  # The current official command runs v2's 3-layer BN head (issue 13).
  assert c.head.num_layers == 3 and c.head.output_dim == 128


def test_simclr_imagenet_recipe():
  c = load("simclr", "imagenet")
  assert (c.dataset, c.model, c.cifar_stem) == ("imagenet2012", "resnet50",
                                                 False)
  assert (c.batch_size, c.temperature, c.num_epochs) == (4096, 0.1, 100)
  assert (c.learning_rate, c.lr_scaling) == (0.3, "linear")
  assert c.weight_decay == 1e-6
  assert (c.warmup_epochs, c.lr_schedule) == (10.0, "cosine")
  assert "color_jitter(1.0, p=0.8, impl='simclr_v1')" in c.view_augment
  # Zero-padded: SimCLR's 'SAME' convolution (HEAD data_util.py:411-413).
  assert ("gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1, "
          "padding='zeros')") in c.view_augment
  assert "area=(0.08, 1.0)" in c.view_augment
  assert "grayscale(p=0.2)" in c.view_augment
  c1000 = load("simclr", "imagenet1000")
  assert c1000.num_epochs == 1000
  assert (c1000.learning_rate, c1000.lr_scaling) == (0.075, "sqrt")
  # Both rules give the same peak LR at B=4096.
  assert math.isclose(0.3 * 4096 / 256, 0.075 * math.sqrt(4096))


def test_simclr_digits_is_small():
  c = load("simclr", "digits")
  assert c.dataset == "digits" and c.model == "tiny_resnet"
  assert c.image_size <= 32


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match="unknown simclr config variant"):
    load("simclr", "cifar100000")


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 100, "divide evenly over the 8 devices"),
    ("batch_size", 0, "integer > 0"),
    ("learning_rate", 0.0, "number > 0"),
    ("learning_rate", -1.0, "number > 0"),
    ("temperature", 0, "number > 0"),
    ("num_epochs", 0, "number > 0"),
    ("num_train_steps", -5, "must be -1"),
    ("image_size", 0, "integer > 0"),
    ("warmup_epochs", -1.0, ">= 0"),
    ("seed", -1, "integer >= 0"),
    ("preview_images", -1, "integer >= 0"),
    ("profile_steps", -1, "integer >= 0"),
    ("data.max_bad_fraction", 2, r"number in \[0, 1\]"),
    ("health.num_examples", -3, "integer >= 0"),
])
def test_invalid_values_name_the_field(field, value, message):
  c = load("simclr", "digits")
  *parents, leaf = field.split(".")
  node = c
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  with pytest.raises(ConfigError, match=f"config.{field}=.*{message}"):
    config_checks.validate(c, num_devices=8, num_processes=1)


def test_batch_must_divide_over_processes():
  c = load("simclr", "digits")
  c.batch_size = 256
  with pytest.raises(ConfigError, match="3 processes"):
    config_checks.validate(c, num_devices=2, num_processes=3)


# Every number of every SimCLR variant (issue 13); sources in the README
# recipe table. Fields common to all variants first.
from contrastive_jax.config import defaults as config_defaults  # noqa: E402

_SIMCLR_COMMON = dict(method="simclr", optimizer="lars", momentum=0.9,
                      lr_schedule="cosine", num_train_steps=-1)
_HEAD = {  # version -> (num_layers, use_bn, output_bias, kernel_init_stddev)
    1: (2, True, False, 0.01), 2: (3, True, False, 0.01)}
_CIFAR = dict(dataset="cifar10", model="resnet18", cifar_stem=True,
              width_multiplier=1, image_size=32, batch_size=512,
              temperature=0.5, num_epochs=1000, learning_rate=1.0,
              lr_scaling="linear", warmup_epochs=10.0,
              views=dict(image_size=32, jitter_strength=0.5, blur=False))
_IMAGENET = dict(dataset="imagenet2012", model="resnet50", cifar_stem=False,
                 width_multiplier=1, image_size=224, batch_size=4096,
                 temperature=0.1, warmup_epochs=10.0,
                 views=dict(image_size=224, jitter_strength=1.0, blur=True))
SIMCLR_RECIPES = {
    "cifar10": (2, -1, dict(_CIFAR, weight_decay=1e-4)),
    "cifar10_v1": (1, -1, dict(_CIFAR, weight_decay=1e-6)),
    "imagenet": (1, -1, dict(_IMAGENET, num_epochs=100, learning_rate=0.3,
                             lr_scaling="linear", weight_decay=1e-6)),
    "imagenet1000": (1, -1, dict(_IMAGENET, num_epochs=1000,
                                 learning_rate=0.075, lr_scaling="sqrt",
                                 weight_decay=1e-6)),
    "imagenet_v2": (2, -1, dict(_IMAGENET, num_epochs=100,
                                learning_rate=0.075, lr_scaling="sqrt",
                                weight_decay=1e-4)),
    "digits": (1, 64, dict(
        dataset="digits", model="tiny_resnet", cifar_stem=True,
        width_multiplier=2, image_size=16, batch_size=256, temperature=0.5,
        num_epochs=100, learning_rate=1.0, lr_scaling="linear",
        weight_decay=1e-4, warmup_epochs=2.0,
        views=dict(image_size=16, jitter_strength=0.5, blur=False,
                   crop_area=(0.5, 1.0), flip=False))),
    # Chosen by measurement (BENCHMARKS.md, "Small data").
    "small": (1, 128, dict(
        dataset="", model="small_resnet", cifar_stem=True,
        width_multiplier=1, image_size=32, batch_size=256, temperature=0.5,
        num_epochs=-1, num_train_steps=450, learning_rate=1.0,
        lr_scaling="linear", weight_decay=1e-4, warmup_epochs=0.0,
        view_augment=config_defaults.small_views(32, (0.4, 1.0)))),
}


@pytest.mark.parametrize("variant", sorted(SIMCLR_RECIPES))
def test_simclr_recipe_numbers(variant):
  version, hidden_dim, fields = SIMCLR_RECIPES[variant]
  c = load("simclr", variant)
  fields = dict(fields)
  views = dict(fields.pop("views", {}))
  common = dict(_SIMCLR_COMMON)
  if "num_train_steps" in fields:  # A step budget, not epochs.
    common.pop("num_train_steps")
  for field, value in {**common, **fields}.items():
    assert c[field] == value, (field, c[field], value)
  # The op spec itself belongs to simclr_views; the recipe is its arguments.
  if views:
    size = views.pop("image_size")
    assert c.view_augment == config_defaults.simclr_views(
        size, version=version, **views)
  head = c.head
  assert (head.num_layers, head.use_bn, head.output_bias,
          head.kernel_init_stddev) == _HEAD[version]
  assert head.dense_init == "flax"  # N(0, 0.01^2), not torch's init
  assert (head.hidden_dim, head.output_dim) == (
      hidden_dim, {"digits": 32, "small": 64}.get(variant, 128))
  if variant == "small":
    c.dataset = "folder:/data/my_images"
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_simclr_variants_are_all_pinned():
  module = config_lib.module("simclr")
  assert set(module.VARIANTS) == set(SIMCLR_RECIPES)


def _declared_variants():
  """(config, variant) for every config file that lists its VARIANTS."""
  for name in config_lib.config_names():
    module = config_lib.module(name)
    for variant in getattr(module, "VARIANTS", ()):
      yield name, variant


@pytest.mark.parametrize("name,variant", list(_declared_variants()))
def test_every_declared_variant_passes_the_validation_layer(name, variant):
  c = load(name, variant)
  if variant == "small":
    # The small-data recipes take the user's folder and nothing else.
    with pytest.raises(ConfigError, match="config.dataset=''.*folder:PATH"):
      config_checks.validate(c, num_devices=8, num_processes=1)
    c.dataset = "folder:/data/my_images"
  config_checks.validate(c, num_devices=8, num_processes=1)


# Each method's `:small` numbers, chosen by measurement on real MNIST-5k
# (BENCHMARKS.md "Small data", each config's comments): the shared data,
# model, views and budget, then the method's own.
SMALL_SHARED = dict(model="small_resnet", image_size=32, batch_size=256,
                    num_epochs=-1, num_train_steps=450, warmup_epochs=0.0,
                    dataset="")
SMALL_RECIPES = {
    "simclr": dict(temperature=0.5, learning_rate=1.0, weight_decay=1e-4),
    "moco_v2": dict(temperature=0.5, learning_rate=0.1, queue_size=512,
                    ema_momentum=0.99, symmetric_loss=True,
                    batch_size=128, num_train_steps=900),
    "moco_v3": dict(temperature=1.0, learning_rate=4.0, weight_decay=1e-6,
                    ema_momentum=0.98, **{"head.output_dim": 64}),
    "byol": dict(learning_rate=4.0, weight_decay=1.5e-6, ema_momentum=0.96,
                 batch_size=128, num_train_steps=900,
                 **{"head.hidden_dim": 256, "head.output_dim": 64,
                    "head.output_bn": True}),
    "simsiam": dict(optimizer="lars", learning_rate=4.0, weight_decay=1.5e-6,
                    weight_decay_mask="exclude_bn_bias", batch_size=128,
                    num_train_steps=900, **{"predictor.hidden_dim": 32}),
    "barlow_twins": dict(learning_rate=2.0, bias_learning_rate=0.048,
                         **{"head.hidden_dim": 1024,
                            "head.output_dim": 1024}),
    "vicreg": dict(learning_rate=2.0, **{"head.hidden_dim": 256,
                                         "head.output_dim": 256}),
    "dino": dict(learning_rate=3e-3, ema_momentum=0.99,
                 **{"head.use_bn": True}),
}


@pytest.mark.parametrize("name", sorted(SMALL_RECIPES))
def test_small_recipe_numbers(name):
  c = load(name, "small")
  for field, want in {**SMALL_SHARED, **SMALL_RECIPES[name]}.items():
    got = c
    for part in field.split("."):
      got = got[part]
    assert got == want, (field, got, want)
  assert c.view_augment == config_defaults.small_views()
  # One budget of images for all: a smaller batch takes more steps.
  assert c.batch_size * c.num_train_steps == config_defaults.SMALL_IMAGES
  assert config_defaults.SMALL_IMAGES == 450 * 256


def test_every_small_recipe_is_pinned():
  assert set(SMALL_RECIPES) == {name for name, variant in _declared_variants()
                                if variant == "small"}
