"""Every config variant loads, and holds the recipe it claims."""

import importlib.util
import math
import os

import pytest

from contrastive_jax import config_checks
from contrastive_jax.errors import ConfigError

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def load(name: str, variant: str | None = None):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(CONFIG_DIR, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


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
  assert "color_jitter(0.5, p=0.8)" in c.view_augment
  assert "gaussian_blur" not in c.view_augment
  assert "random_resized_crop(32" in c.view_augment
  assert c.head.num_layers == 2 and c.head.output_dim == 128


def test_simclr_imagenet_recipe():
  c = load("simclr", "imagenet")
  assert (c.dataset, c.model, c.cifar_stem) == ("imagenet2012", "resnet50",
                                                 False)
  assert (c.batch_size, c.temperature, c.num_epochs) == (4096, 0.1, 100)
  assert (c.learning_rate, c.lr_scaling) == (0.3, "linear")
  assert c.weight_decay == 1e-6
  assert (c.warmup_epochs, c.lr_schedule) == (10.0, "cosine")
  assert "color_jitter(1.0, p=0.8)" in c.view_augment
  assert "gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1)" in (
      c.view_augment)
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
])
def test_invalid_values_name_the_field(field, value, message):
  c = load("simclr", "digits")
  c[field] = value
  with pytest.raises(ConfigError, match=f"config.{field}=.*{message}"):
    config_checks.validate(c, num_devices=8, num_processes=1)


def test_batch_must_divide_over_processes():
  c = load("simclr", "digits")
  c.batch_size = 256
  with pytest.raises(ConfigError, match="3 processes"):
    config_checks.validate(c, num_devices=2, num_processes=3)
