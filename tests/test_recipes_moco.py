"""Issue 13: the MoCo and evaluation recipes hold every reference number.

References: facebookresearch/moco main_moco.py, moco/builder.py and
colab/moco_cifar10_demo.ipynb; google-research/simclr README.md,
model_util.py and run.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from contrastive_jax import optim
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import defaults as config_defaults
from contrastive_jax.data import augment
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import classifier, encoder_with_head
from contrastive_jax.models import ProjectionHead
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
  # PyTorch's default nn.Linear init (builder.py:26-32 @90e244a).
  assert c.head.dense_init == "torch_linear"
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
  # SimCLR's ImageNet command (HEAD README.md:135-144): weight decay 1e-6
  # there (the paper: none; we follow the code), 90 epochs.
  simclr = load("linear_eval", "imagenet")
  assert (simclr.optimizer, simclr.nesterov, simclr.learning_rate,
          simclr.lr_scaling, simclr.weight_decay, simclr.num_epochs,
          simclr.lr_schedule, simclr.batch_size, simclr.warmup_epochs) == (
              "sgd", True, 0.1, "linear", 1e-6, 90, "cosine", 4096, 0.0)
  # Its CIFAR-10 command (HEAD README.md:115-123): 100 epochs, no decay.
  cifar = load("linear_eval", "cifar10")
  assert (cifar.optimizer, cifar.nesterov, cifar.learning_rate,
          cifar.lr_scaling, cifar.weight_decay, cifar.num_epochs,
          cifar.lr_schedule, cifar.batch_size, cifar.warmup_epochs) == (
              "sgd", True, 0.1, "linear", 0.0, 100, "cosine", 512, 0.0)
  moco = load("linear_eval", "imagenet_moco")
  assert (moco.optimizer, moco.nesterov, moco.learning_rate, moco.lr_scaling,
          moco.weight_decay, moco.num_epochs, moco.lr_schedule,
          tuple(moco.lr_decay_epochs), moco.batch_size) == (
              "sgd", False, 30.0, "none", 0.0, 100, "step", (60, 80), 256)
  # Both references decay every trained parameter of the classifier.
  for variant in ("cifar10", "imagenet", "cifar10_moco", "imagenet_moco"):
    assert load("linear_eval", variant).weight_decay_mask == "all", variant
  # Classifier init: SimCLR's --zero_init_logits_layer=True; MoCo's
  # N(0, 0.01^2) kernel (main_lincls.py:152-153 @90e244a).
  assert (simclr.classifier_init_stddev, cifar.classifier_init_stddev,
          moco.classifier_init_stddev) == (0.0, 0.0, 0.01)
  assert load("linear_eval", "cifar10_moco").classifier_init_stddev == 0.01
  assert load("finetune", "imagenet_1pct").classifier_init_stddev == 0.0


def test_digits_linear_eval_demos():
  # The quickstart keeps its tuned 30 epochs and crop; MoCo's decays at 60%
  # and 80% of the run move with it.
  simclr, moco = load("linear_eval", "digits"), load("linear_eval",
                                                     "digits_moco")
  for c in (simclr, moco):
    assert c.num_epochs == 30 and c.batch_size == 256
    assert c.view_augment == "random_resized_crop(16, area=(0.5, 1.0))"
    assert c.eval_augment == "resize(16)"
  assert (simclr.lr_schedule, simclr.weight_decay) == ("cosine", 0.0)
  assert (moco.lr_schedule, tuple(moco.lr_decay_epochs)) == ("step", (18, 24))


def test_finetune_has_no_moco_variant():
  for variant in ("cifar10_moco", "imagenet_moco_1pct", "digits_moco"):
    with pytest.raises(ValueError, match="unknown option 'moco' in finetune"):
      load("finetune", variant)


@pytest.mark.parametrize("method, variant, size", [
    ("linear_eval", "cifar10", 32), ("linear_eval", "imagenet", 224),
    ("finetune", "cifar10_10pct", 32), ("finetune", "imagenet_1pct", 224)])
def test_simclr_protocol_training_view(method, variant, size):
  # HEAD data.py:164: the pretraining crop (crop_and_resize,
  # data_util.py:304-325) + flip, no colour.
  c = load(method, variant)
  assert c.view_augment == (f"{config_defaults.simclr_crop(size)}"
                            "|flip_lr(p=0.5)")
  crop = c.view_augment.split("|")[0]
  assert (f"random_resized_crop({size}, area=(0.08, 1.0), "
          "min_object_covered=0.1, max_attempts=100)") == crop
  augment.build_view(c.view_augment)
  augment.build_view(c.eval_augment, field="eval_augment")


@pytest.mark.parametrize("variant, size", [("cifar10_moco", 32),
                                           ("imagenet_moco", 224)])
def test_moco_protocol_views(variant, size):
  # main_lincls.py:251-252 @90e244a: RandomResizedCrop(224) + flip.
  c = load("linear_eval", variant)
  assert c.view_augment == (f"{config_defaults.moco_crop(size)}"
                            "|flip_lr(p=0.5)")
  assert c.view_augment.split("|")[0] == (
      f"random_resized_crop({size}, area=(0.08, 1.0), impl='torchvision', "
      "method='bilinear', antialias=True)")
  augment.build_view(c.view_augment)
  augment.build_view(c.eval_augment, field="eval_augment")
  if variant == "imagenet_moco":
    assert c.eval_augment == ("center_crop(224, crop_fraction=0.875, "
                              "method='bilinear', antialias=True)")
  else:
    assert c.eval_augment == "resize(32)"  # the 32-px image as it is


def _tv_resize_center_crop(image, resize, crop):
  """torchvision 0.x on a PIL image: Resize(resize) (shorter side, PIL
  bilinear) then CenterCrop(crop)."""
  h, w = image.shape[:2]
  if h <= w:
    size = (int(resize * w / h), resize)
  else:
    size = (resize, int(resize * h / w))
  out = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
  top = int(round((out.shape[0] - crop) / 2.0))
  left = int(round((out.shape[1] - crop) / 2.0))
  return out[top:top + crop, left:left + crop]


@pytest.mark.parametrize("shape", [(320, 400, 3), (400, 320, 3)])
def test_moco_eval_view_is_resize_256_center_crop_224(shape):
  # main_lincls.py:268-269 @90e244a on a random uint8 image whose shorter
  # side scales exactly (320 -> 256): the same pixels up to PIL's 8-bit
  # rounding, except the outer ring (PIL's filter reads beyond the crop).
  image = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
  want = _tv_resize_center_crop(image, 256, 224) / 255.0

  def view(spec):
    out = augment.build_view(spec, field="eval_augment")(
        tf.constant(image, tf.float32) / 255.0, tf.constant([0, 0]))
    return np.abs(out.numpy() - want)

  error = view(load("linear_eval", "imagenet_moco").eval_augment)
  assert error.shape == (224, 224, 3)
  assert error[1:-1, 1:-1].max() <= 1.01 / 255 and error.mean() < 0.5 / 255
  # The SimCLR protocol's bicubic, unantialiased view is far from it.
  assert view(load("linear_eval", "imagenet").eval_augment)[
      1:-1, 1:-1].max() > 20 / 255
  with pytest.raises(ConfigError, match="antialias must be True or False"):
    augment.center_crop(224, antialias=1)


def _classifier_kernel(variant, num_classes=1000):
  c = load("linear_eval", variant)
  c.pretrained, c.num_classes = "random", num_classes
  model = classifier.create_model(c, axis_name=None)
  params = model.init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)),
                      train=False, encoder_train=False)["params"]
  return (np.asarray(params["linear"]["kernel"]),
          np.asarray(params["linear"]["bias"]))


def test_linear_eval_classifier_init():
  # MoCo: N(0, 0.01^2) kernel, zero bias (main_lincls.py:152-153
  # @90e244a); SimCLR: all zeros (--zero_init_logits_layer=True).
  kernel, bias = _classifier_kernel("digits_moco")
  assert kernel.size >= 32_000
  assert abs(kernel.std() - 0.01) < 3e-4 and abs(kernel.mean()) < 3e-4
  assert np.all(bias == 0)
  kernel, bias = _classifier_kernel("digits")
  assert np.all(kernel == 0) and np.all(bias == 0)
  c = load("linear_eval", "digits")
  c.pretrained, c.classifier_init_stddev = "random", -0.01
  # Checked with the classifier's other fields, before anything is built.
  with pytest.raises(ConfigError, match="classifier_init_stddev"):
    config_checks.validate(c, num_devices=8, num_processes=1)
  # Configs from before the field existed: zero init.
  del c["classifier_init_stddev"]
  assert classifier.create_model(c, axis_name=None).init_stddev == 0.0


def test_torch_linear_head_init():
  # PyTorch's nn.Linear default: kernel and bias U(+-1/sqrt(fan_in)), so
  # std 1/sqrt(3 fan_in); fan_in differs per layer (64 in, 512 hidden).
  head = ProjectionHead(num_layers=2, hidden_dim=512, output_dim=256,
                        output_bias=True, dense_init="torch_linear")
  params = head.init(jax.random.key(0), jnp.zeros((2, 64)),
                     train=False)["params"]
  for name, fan_in in (("dense1", 64), ("dense2", 512)):
    bound = 1 / np.sqrt(fan_in)
    kernel = np.asarray(params[name]["kernel"])
    bias = np.asarray(params[name]["bias"])
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.99 * bound
    assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    assert abs(kernel.mean()) < 0.01 * bound
    assert np.abs(bias).max() <= bound
    assert bias.std() == pytest.approx(bound / np.sqrt(3), rel=0.15)
  # The default stays flax's: LeCun normal kernel, zero bias.
  flax_params = ProjectionHead(num_layers=1, output_dim=256,
                               output_bias=True).init(
                                   jax.random.key(0), jnp.zeros((2, 512)),
                                   train=False)["params"]["dense1"]
  assert np.all(np.asarray(flax_params["bias"]) == 0)
  with pytest.raises(ConfigError, match="kernel_init_stddev"):
    ProjectionHead(dense_init="torch_linear", kernel_init_stddev=0.01).init(
        jax.random.key(0), jnp.zeros((2, 8)), train=False)
  with pytest.raises(ConfigError, match="head.dense_init must be one of"):
    ProjectionHead(dense_init="torch").init(
        jax.random.key(0), jnp.zeros((2, 8)), train=False)


def test_head_init_reaches_the_model():
  for name, variant in (("moco_v1", "cifar10"), ("moco_v2", "imagenet"),
                        ("moco_v2", "cifar10_demo")):
    c = load(name, variant)
    assert encoder_with_head.create(
        c, bn_axis_name=None).head.dense_init == "torch_linear"
  # The digits demos keep flax's init (measured: ~10 points of kNN).
  for name in ("moco_v1", "moco_v2"):
    assert load(name, "digits").head.dense_init == "flax"
  c = load("simclr", "digits")
  head = encoder_with_head.create(c, bn_axis_name=None).head
  assert head.dense_init == "flax"
  # A checkpoint's stored config from before the field: flax's init.
  del c.head["dense_init"]
  head = encoder_with_head.create(c, bn_axis_name=None).head
  assert head.dense_init == "flax"


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
