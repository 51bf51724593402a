"""Issue 23: the solo-learn CIFAR-10 recipes, the SimSiam and BYOL linear
protocols, and the other recipe numbers of the second audit, each against
its citation.

References: vturrisi/solo-learn @9187ea3; facebookresearch/simsiam
@a7bc177; google-deepmind/deepmind-research byol/ @4822a45; apex
apex/parallel/LARC.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax import optim
from contrastive_jax.config import checks as config_checks
from contrastive_jax.models import input_norm
from tests.test_configs import load
from tests.test_solo_lars import _solo_learn_lars

# ---------------------------------------------- solo-learn CIFAR-10 recipes

# scripts/pretrain/cifar/{byol,mocov3}.yaml: `name: "lars"`, `clip_lr:
# True`, `eta: 0.02`, `exclude_bias_n_norm: True` (byol.yaml:32, :38-40;
# mocov3.yaml:33, :39-41).
SOLO_LARS = dict(optimizer="lars_solo", lars_eta=0.02, lars_clip_lr=True,
                 lars_adapt_mask="exclude_bn_bias",
                 weight_decay_mask="exclude_bn_bias", momentum=0.9)
# torchvision's resnet18 with its defaults (solo/backbones/resnet/
# __init__.py:24-25), solo-learn's CIFAR-10 statistics
# (solo/data/pretrain_dataloader.py:207).
SOLO_NETWORK = dict(conv_init="torchvision", zero_init_residual=False,
                    input_norm="cifar10_solo")


@pytest.mark.parametrize("name", ["byol", "moco_v3", "simsiam"])
def test_solo_learn_cifar10_recipes(name):
  c = load(name, "cifar10")
  for field, want in SOLO_NETWORK.items():
    assert c[field] == want, field
  if name == "simsiam":
    # simsiam.yaml:30 `name: "sgd"`, momentum 0.9 (solo/args/pretrain.py:
    # 161-162), weight decay on every parameter (exclude_bias_n_norm_wd
    # False, solo/methods/base.py:280-282).
    assert (c.optimizer, c.momentum, c.weight_decay_mask) == ("sgd", 0.9,
                                                              "all")
  else:
    for field, want in SOLO_LARS.items():
      assert c[field] == want, field
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_solo_learn_cifar10_statistics():
  mean, std = input_norm.INPUT_NORMS["cifar10_solo"]
  assert mean == (0.4914, 0.4822, 0.4465)
  assert std == (0.2470, 0.2435, 0.2616)
  # MoCo's CIFAR-10 demo keeps its own.
  assert input_norm.INPUT_NORMS["cifar10"][1] == (0.2023, 0.1994, 0.2010)


# ------------------------------------------------ SimSiam linear protocol


@pytest.mark.parametrize("dataset", ["imagenet", "cifar10"])
def test_simsiam_linear_protocol(dataset):
  c = load("linear_eval", f"{dataset}_simsiam")
  # main_lincls.py: LARC(trust_coefficient=.001, clip=False) (:232) on fc
  # weight and bias; lr 0.1 (:53), x B/256 (:188); momentum 0.9 (:55);
  # wd 0 (:57); B 4096 (:48); 90 epochs (:44); cosine, no warmup
  # (:491-495); fc N(0, 0.01^2) (:160).
  assert (c.optimizer, c.lars_eta, c.lars_clip_lr, c.lars_adapt_mask) == (
      "lars_solo", 1e-3, False, "all")
  assert (c.learning_rate, c.lr_scaling, c.momentum, c.nesterov) == (
      0.1, "linear", 0.9, False)
  assert (c.weight_decay, c.batch_size, c.num_epochs) == (0.0, 4096, 90)
  assert (c.lr_schedule, c.warmup_epochs) == ("cosine", 0.0)
  assert (c.classifier_init_stddev, c.feature_bn) == (0.01, False)
  # MoCo's views (main_lincls.py:267-268, :284-285).
  assert c.view_augment == (
      f"random_resized_crop({c.image_size}, area=(0.08, 1.0), "
      "impl='torchvision', method='bilinear', antialias=True)|flip_lr(p=0.5)")
  if dataset == "imagenet":
    assert c.eval_augment == ("center_crop(224, crop_fraction=0.875, "
                              "method='bilinear', antialias=True)")
  c.pretrained = "random"  # a linear_eval run names its encoder
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_simsiam_linear_protocol_adapts_kernel_and_bias():
  # Two steps of the built optimizer on a classifier against apex's LARC
  # (= solo-learn's LARS without exclusions): the zero bias takes plain g
  # first, then its trust ratio.
  c = load("linear_eval", "imagenet_simsiam")
  built = optim.optimizer_from_config(c, steps_per_epoch=10, total_steps=900)
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(0, 0.01, (8, 5)), "bias": np.zeros(5)}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()}
           for _ in range(2)]
  lrs = [{k: float(built.learning_rate(t)) for k in params} for t in (0, 1)]
  assert lrs[0]["bias"] == pytest.approx(0.1 * 4096 / 256)
  want = _solo_learn_lars(params, grads, lrs, weight_decay=0.0, eta=1e-3,
                          clip_lr=False, momentum=0.9,
                          exclude_bias_n_norm=False)
  p = {"linear": jax.tree.map(jnp.float32, params)}
  state = built.tx.init(p)
  for g in grads:
    updates, state = built.tx.update(
        {"linear": jax.tree.map(jnp.float32, g)}, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)
  for k in params:
    np.testing.assert_allclose(p["linear"][k], want[k], rtol=1e-5,
                               atol=1e-8)


# --------------------------------------------------- BYOL linear protocol


@pytest.mark.parametrize("dataset", ["imagenet", "cifar10"])
def test_byol_linear_protocol(dataset):
  c = load("linear_eval", f"{dataset}_byol")
  # configs/eval.py: momentum 0.9, Nesterov (:39-40), base lr 0.2 (:43)
  # x B/256 (utils/schedules.py:34), no warmup (:44), 80 epochs (:29);
  # optax.sgd: no weight decay (eval_experiment.py:301); B 4096
  # (main_loop.py:37).
  assert (c.optimizer, c.momentum, c.nesterov) == ("sgd", 0.9, True)
  assert (c.learning_rate, c.lr_scaling, c.lr_schedule) == (0.2, "linear",
                                                            "cosine")
  assert (c.warmup_epochs, c.num_epochs, c.weight_decay) == (0.0, 80, 0.0)
  assert c.batch_size == 4096 and not c.feature_bn
  # utils/dataset.py:190-192, :199, :204-231: BYOL's crop (one draw) +
  # flip, bicubic; :194, :253-263: the central 0.875, bicubic.
  assert c.view_augment == (
      f"random_resized_crop({c.image_size}, area=(0.08, 1.0), "
      "impl='torchvision', max_attempts=1)|flip_lr(p=0.5)")
  if dataset == "imagenet":
    assert c.eval_augment == "center_crop(224, crop_fraction=0.875)"
  c.pretrained = "random"  # a linear_eval run names its encoder
  config_checks.validate(c, num_devices=8, num_processes=1)


@pytest.mark.parametrize("variant", ["imagenet_byol", "cifar10_simsiam"])
def test_finetune_has_no_linear_protocols(variant):
  with pytest.raises(ValueError, match="finetuning has one recipe"):
    load("finetune", variant)


# ------------------------------------------------------------------ views


def test_simsiam_cifar10_blur_is_wide_enough_for_its_sigma():
  # PIL's GaussianBlur(radius=sigma), sigma 0.1-2 (solo/data/
  # pretrain_dataloader.py:77-102, :254): 13 taps, +-3 sigma at sigma 2.
  ops = load("simsiam", "cifar10").view_augment.split("|")
  assert ops[3] == "gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_size=13)"


@pytest.mark.parametrize("name, variant", [
    ("simclr", "imagenet"), ("simclr", "imagenet_v2"), ("byol", "imagenet")])
def test_simclr_and_byol_blur_pads_with_zeros(name, variant):
  # 'SAME' depthwise convolutions: simclr HEAD data_util.py:411-413; byol
  # utils/augmentations.py:148-149, :427.
  c = load(name, variant)
  for spec in (c.view_augment, c.view_augment_2 or c.view_augment):
    blur = [op for op in spec.split("|") if op.startswith("gaussian_blur")]
    assert blur and blur[0].endswith("kernel_fraction=0.1, padding='zeros')")


def test_byol_multicrop_small_views_are_solo_learns():
  # asymmetric.yaml:47-68 (imagenet-100-multicrop): 6 crops of 96 px, crop
  # 0.08-1 (torchvision, bicubic, PIL's antialiasing), torchvision's jitter
  # 0.4/0.4/0.2/0.1 p 0.8, grayscale 0.2, no blur or solarize, flip 0.5.
  c = load("byol", "multicrop")
  assert c.extra_views == (
      "random_resized_crop(96, area=(0.08, 1.0), impl='torchvision', "
      "method='bicubic', antialias=True)|color_jitter(1.0, p=0.8, "
      "brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, "
      "impl='torchvision')|grayscale(p=0.2)|flip_lr(p=0.5)",) * 6


# ------------------------------------------------------- SimCLR v2 ImageNet


def test_simclr_imagenet_v2_is_the_codes_imagenet_command():
  """One source, the code (google-research/simclr @383d414): the README's
  ImageNet pretraining command, README.md:101-106 (tf2/README.md:83-88),
  "which reflects the default hyperparameters in our paper" (:98), and
  run.py's defaults for the flags it leaves out. Not the v2 paper's 800
  epochs (paper v2 section 4), which no command in the code runs."""
  c = load("simclr", "imagenet_v2")
  # --train_batch_size=4096 --train_epochs=100 --temperature=0.1
  assert (c.batch_size, c.num_epochs, c.temperature) == (4096, 100, 0.1)
  # --learning_rate=0.075 --learning_rate_scaling=sqrt --weight_decay=1e-4:
  # a peak of 0.075 * sqrt(4096) = 4.8, as 0.3 * 4096/256 (README.md:109).
  assert (c.learning_rate, c.lr_scaling, c.weight_decay) == (0.075, "sqrt",
                                                             1e-4)
  assert c.learning_rate * c.batch_size ** 0.5 == pytest.approx(4.8)
  # Defaults: warmup_epochs 10 (run.py:50-52), then cosine (model_util.py:
  # 58-82); optimizer lars, momentum 0.9 (run.py:170-176); num_proj_layers
  # 3 (run.py:206-208); proj_out_dim 128 (run.py:202-204);
  # color_jitter_strength 1.0, use_blur True (run.py:239-245). global_bn
  # True (run.py:215-217) is SimCLR's only BN here (methods/simclr.py).
  assert (c.warmup_epochs, c.lr_schedule, c.optimizer, c.momentum) == (
      10.0, "cosine", "lars", 0.9)
  assert (c.head.num_layers, c.head.output_dim, c.head.use_bn) == (3, 128,
                                                                   True)
  assert "impl='simclr_v2'" in c.view_augment
  assert c.view_augment.startswith("random_resized_crop(224")
  assert "color_jitter(1.0, " in c.view_augment
  assert "gaussian_blur(p=0.5, sigma=(0.1, 2.0)" in c.view_augment
  # The same network and data as v1's ImageNet recipe otherwise.
  v1 = load("simclr", "imagenet")
  for field in ("model", "dataset", "image_size", "zero_init_residual",
                "conv_init", "input_norm", "weight_decay_mask"):
    assert c[field] == v1[field], field
