"""Issue 13: the MoCo and evaluation recipes hold every reference number.

References: facebookresearch/moco main_moco.py, moco/builder.py and
colab/moco_cifar10_demo.ipynb; google-research/simclr README.md,
model_util.py and run.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax import config_checks, optim
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import classifier
from tests.test_configs import load

MOCO_REFERENCE = dict(weight_decay_mask="all", conv_init="torchvision",
                      zero_init_residual=False, optimizer="sgd",
                      momentum=0.9, warmup_epochs=0.0, key_bn="shuffle",
                      symmetric_loss=False)


@pytest.mark.parametrize("name, variant", [
    ("moco_v1", "imagenet"), ("moco_v1", "cifar10"), ("moco_v2", "imagenet"),
    ("moco_v2", "imagenet800"), ("moco_v2", "cifar10"),
    ("moco_v2", "cifar10_demo")])
def test_moco_configs_follow_the_reference_network(name, variant):
  c = load(name, variant)
  for field, want in MOCO_REFERENCE.items():
    assert c[field] == want, field
  assert c.head.output_bias is True and c.head.output_dim == 128
  assert not c.head.use_bn
  assert c.input_norm == ("imagenet" if variant.startswith("imagenet")
                          else "cifar10")
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_moco_imagenet_numbers():
  v1, v2 = load("moco_v1", "imagenet"), load("moco_v2", "imagenet")
  for c in (v1, v2):
    assert (c.model, c.cifar_stem, c.image_size) == ("resnet50", False, 224)
    assert (c.batch_size, c.queue_size, c.ema_momentum) == (256, 65536, 0.999)
    assert (c.learning_rate, c.lr_scaling) == (0.03, "linear")
    assert (c.weight_decay, c.num_epochs) == (1e-4, 200)
    assert c.bn_groups_per_device == 1
    assert "area=(0.2, 1.0)" in c.view_augment
  assert (v1.head.num_layers, v1.temperature) == (1, 0.07)
  assert (v1.lr_schedule, tuple(v1.lr_decay_epochs),
          v1.lr_decay_factor) == ("step", (120, 160), 0.1)
  assert (v2.head.num_layers, v2.head.hidden_dim, v2.temperature) == (2, -1,
                                                                      0.2)
  assert v2.lr_schedule == "cosine" and "gaussian_blur" in v2.view_augment
  assert load("moco_v2", "imagenet800").num_epochs == 800


def test_moco_cifar10_transplants_keep_imagenet_method_numbers():
  for name, tau in (("moco_v1", 0.07), ("moco_v2", 0.2)):
    c = load(name, "cifar10")
    assert (c.model, c.cifar_stem, c.batch_size) == ("resnet18", True, 512)
    assert (c.queue_size, c.bn_groups_per_device) == (4096, 8)
    assert (c.ema_momentum, c.temperature, c.weight_decay) == (0.999, tau,
                                                               1e-4)
    assert "area=(0.2, 1.0)" in c.view_augment
    assert optim.scaled_learning_rate(c.learning_rate, c.batch_size,
                                      c.lr_scaling) == pytest.approx(0.06)


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_cifar10_demo_is_the_notebook(symmetric):
  c = load("moco_v2", "cifar10_demo_symmetric" if symmetric
           else "cifar10_demo")
  assert (c.dataset, c.model, c.cifar_stem, c.image_size) == (
      "cifar10", "resnet18", True, 32)
  assert (c.head.num_layers, c.head.output_dim, c.head.output_bias) == (
      1, 128, True)
  assert (c.temperature, c.ema_momentum, c.ema_momentum_schedule) == (
      0.1, 0.99, "constant")
  assert (c.queue_size, c.bn_groups_per_device, c.batch_size) == (4096, 8,
                                                                   512)
  assert c.symmetric_loss is symmetric
  assert (c.learning_rate, c.lr_scaling, c.lr_schedule) == (0.06, "none",
                                                            "cosine")
  assert (c.warmup_epochs, c.num_epochs, c.momentum) == (0.0, 200, 0.9)
  assert (c.weight_decay, c.weight_decay_mask) == (5e-4, "all")
  assert c.input_norm == "cifar10"
  assert (c.knn.k, c.knn.temperature, c.knn.every_steps) == (200, 0.1, 97)
  ops = c.view_augment.split("|")
  # The numbers; `impl=` etc. belong to the view spec functions.
  assert ops[0].startswith("random_resized_crop(32, area=(0.08, 1.0)")
  assert any(op.startswith("color_jitter(1.0, p=0.8, brightness=0.4, "
                           "contrast=0.4, saturation=0.4, hue=0.1")
             for op in ops)
  assert "grayscale(p=0.2)" in ops and "flip_lr(p=0.5)" in ops
  assert not any("blur" in op for op in ops) and len(ops) == 4


def test_simclr_configs_keep_simclr_network_defaults():
  for variant in ("cifar10", "imagenet", "digits"):
    c = load("simclr", variant)
    assert (c.weight_decay_mask, c.conv_init, c.zero_init_residual,
            c.input_norm) == ("exclude_bn_bias", "simclr", True, "none")


def test_linear_eval_protocols():
  for variant in ("cifar10", "imagenet", "cifar10_moco", "imagenet_moco"):
    assert load("linear_eval", variant).feature_bn is False, variant
  assert load("linear_eval", "digits").feature_bn is True  # the quickstart
  simclr = load("linear_eval", "imagenet")
  assert (simclr.optimizer, simclr.nesterov, simclr.learning_rate,
          simclr.lr_scaling, simclr.weight_decay, simclr.num_epochs,
          simclr.lr_schedule, simclr.batch_size) == (
              "sgd", True, 0.1, "linear", 0.0, 90, "cosine", 4096)
  moco = load("linear_eval", "imagenet_moco")
  assert (moco.optimizer, moco.nesterov, moco.learning_rate, moco.lr_scaling,
          moco.weight_decay, moco.num_epochs, moco.lr_schedule,
          tuple(moco.lr_decay_epochs), moco.batch_size) == (
              "sgd", False, 30.0, "none", 0.0, 100, "step", (60, 80), 256)


def test_finetune_recipe_is_simclr_semi_supervised_command():
  c = load("finetune", "imagenet_1pct")
  assert (c.optimizer, c.learning_rate, c.lr_scaling, c.nesterov) == (
      "lars", 0.005, "sqrt", False)
  assert (c.batch_size, c.weight_decay, c.warmup_epochs, c.num_epochs) == (
      1024, 0.0, 0.0, 60)
  assert optim.scaled_learning_rate(c.learning_rate, c.batch_size,
                                    c.lr_scaling) == pytest.approx(0.16)
  assert c.feature_bn is False and c.finetune_from_head_layer == 0
  assert (c.dataset, c.train_split, c.eval_dataset, c.eval_split) == (
      "imagenet2012_subset/1pct", "train", "imagenet2012", "validation")
  assert c.label_percent == 100
  ten = load("finetune", "imagenet_10pct")
  assert (ten.dataset, ten.num_epochs) == ("imagenet2012_subset/10pct", 30)
  assert load("finetune", "imagenet").num_epochs == 30
  cifar = load("finetune", "cifar10_10pct")
  assert (cifar.dataset, cifar.train_split, cifar.label_percent,
          cifar.eval_dataset) == ("cifar10", "train", 10, "")
  with pytest.raises(ValueError, match="1pct and 10pct"):
    load("finetune", "imagenet_5pct")


def _finetune_config(layer, head_layers=3, use_bn=True):
  c = load("finetune", "digits")
  c.pretrained = "random"
  c.finetune_from_head_layer = layer
  c.head.num_layers, c.head.use_bn, c.head.hidden_dim = (head_layers, use_bn,
                                                         24)
  return c


def test_finetune_from_first_head_layer():
  c = _finetune_config(1)
  model = classifier.create_model(c, axis_name=None)
  x = jnp.zeros((2, 16, 16, 3))
  v = model.init(jax.random.key(0), x, train=False, encoder_train=False)
  assert set(v["params"]["head"]) == {"dense1", "bn1"}
  assert "bias" not in v["params"]["head"]["dense1"]  # BN follows
  assert v["params"]["head"]["dense1"]["kernel"].shape[-1] == 24
  assert v["params"]["linear"]["kernel"].shape == (24, 10)
  assert "head" not in classifier.create_model(
      _finetune_config(0), axis_name=None).init(
          jax.random.key(0), x, train=False, encoder_train=False)["params"]
  with pytest.raises(ConfigError, match="hidden layer"):
    classifier.create_model(_finetune_config(1, head_layers=1),
                            axis_name=None)


def test_place_head_takes_the_pretrained_first_layer():
  c = _finetune_config(1)
  model = classifier.create_model(c, axis_name=None)
  tx = optim.create_optimizer(name="sgd", learning_rate=0.1, weight_decay=0.0)
  state = classifier.init_state(jax.random.key(0), model=model, tx=tx,
                                config=c)
  pre = jax.tree.map(lambda a: np.full(a.shape, 7.0, a.dtype),
                     {"params": dict(state.params["head"],
                                     dense2={"kernel": np.zeros((24, 8))}),
                      "batch_stats": dict(state.batch_stats["head"])})
  # Only head_variables of a `pretrained.Pretrained` is read.
  loaded = type("Loaded", (), {"head_variables": pre})()
  head, stats = classifier._place_head(  # pylint: disable=protected-access
      loaded, state, dict(state.batch_stats),
      lambda new, like: jax.tree.map(jnp.asarray, new))
  assert set(head) == {"dense1", "bn1"}  # not the later layers
  assert all(np.all(np.asarray(a) == 7.0) for a in jax.tree.leaves(head))
  assert all(np.all(np.asarray(a) == 7.0)
             for a in jax.tree.leaves(stats["head"]))
