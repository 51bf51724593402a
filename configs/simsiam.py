"""SimSiam (Chen & He 2021) pretraining.

"ref" is facebookresearch/simsiam @a7bc177 (the README table cites each
number's line).

Variants (`--config=configs/simsiam.py:VARIANT`):
  imagenet (default) the reference's README command: ResNet-50 (torchvision
           init, zero-initialised last BN gamma of each block), B=512, 100
           epochs, SGD lr 0.05*B/256, momentum 0.9, wd 1e-4 on every
           parameter, cosine without warmup, the predictor at the initial
           lr throughout (--fix-pred-lr); projector 3 x Linear(2048) with
           BN, the last BN without affine; predictor Linear(512)-BN-ReLU-
           Linear(2048); MoCo v2's views; SyncBN. Paper: 68.1% linear top-1.
  cifar10  solo-learn's CIFAR-10 SimSiam recipe (vturrisi/solo-learn
           scripts/pretrain/cifar/simsiam.yaml @9187ea3): ResNet-18 with
           CIFAR stem, B=256, 1000 epochs, SGD lr 0.5*B/256, wd 1e-5, 10
           warmup epochs + cosine, static predictor lr, the symmetric weak
           views (crop 0.08-1, jitter 0.4/0.4/0.4/0.1 p=0.8, grayscale 0.2,
           blur 0.5). solo-learn reports 90.51%; not reproduced here.
  small    your own folder (simclr.py:small's data, model and views;
           its budget of images as 900 steps of 128): byol.py:small's LARS
           lr 4.0*B/256, wd 1.5e-6; 93.0% and 93.8% linear top-1 on real
           MNIST-5k (two seeds) against the pixels' 88.4% (BENCHMARKS.md
           "Small data").
  digits   offline demo on scikit-learn's handwritten digits: a tiny ResNet
           that trains in about a minute on 2 CPU cores.
"""

import ml_collections

from contrastive_jax.config.defaults import (base_config, moco_views,
                                             use_pretraining_dataset,
                                             use_small_data, variant_of)

VARIANTS = ("imagenet", "cifar10", "small", "digits")


def predictor(*, hidden_dim: int, output_dim: int) -> ml_collections.ConfigDict:
  """The prediction MLP h: Linear(hidden, no bias) -> BN -> ReLU ->
  Linear(output, with bias), no BN on the output (ref simsiam/builder.py:
  39-42), PyTorch's default nn.Linear init."""
  return ml_collections.ConfigDict(dict(
      num_layers=2, hidden_dim=hidden_dim, output_dim=output_dim,
      use_bn=True, output_bn=False, output_bias=True,
      dense_init="torch_linear"))


def get_config(arg: str | None = None):
  variant = variant_of("simsiam", arg, VARIANTS, default="imagenet")
  c = base_config()
  c.method = "simsiam"
  # Projector: Linear(2048) -> BN -> ReLU, twice, then Linear(dim) -> BN
  # without affine (ref builder.py:26-36; prev_dim is ResNet-50's 2048, dim
  # --dim=2048, main_simsiam.py:86-87). The last Linear's bias is frozen
  # and cancelled by that BN (builder.py:36): no bias here.
  c.head.num_layers = 3
  c.head.hidden_dim = 2048
  c.head.output_dim = 2048
  c.head.use_bn = True
  c.head.output_bn = True
  c.head.output_bn_scale = False
  c.head.output_bias = False
  c.head.dense_init = "torch_linear"
  # --pred-dim=512 (main_simsiam.py:88-89).
  c.predictor = predictor(hidden_dim=512, output_dim=2048)
  # SGD, momentum 0.9, wd 1e-4 (main_simsiam.py:56-62, :199-201) on every
  # parameter (torch SGD over model.parameters()); lr 0.05 * B / 256
  # (:157); cosine over the run, no warmup (:359-366).
  c.optimizer, c.momentum = "sgd", 0.9
  c.learning_rate, c.lr_scaling = 0.05, "linear"
  c.lr_schedule, c.warmup_epochs = "cosine", 0.0
  c.weight_decay, c.weight_decay_mask = 1e-4, "all"
  # torchvision's ResNet-50 with zero_init_residual=True (builder.py:24);
  # ImageNet mean/std (main_simsiam.py:225-226).
  c.conv_init, c.zero_init_residual = "torchvision", True
  c.input_norm = "imagenet"
  if variant == "imagenet":
    use_pretraining_dataset(c, "imagenet")
    c.batch_size = 512                     # ref main_simsiam.py:51
    c.num_epochs = 100                     # ref main_simsiam.py:47
    # crop 0.2-1, jitter 0.4/0.4/0.4/0.1 p=0.8, grayscale 0.2, blur 0.5,
    # flip: MoCo v2's views (main_simsiam.py:228-237).
    c.view_augment = moco_views(224, version=2)
  elif variant == "cifar10":
    _solo_learn_cifar10(c)
  elif variant == "small":
    # Your own folder (configs/simclr.py:small's data, model and views);
    # SimSiam's numbers measured on real MNIST (BENCHMARKS.md "Small
    # data"): the demo's head, a 1/4-wide predictor bottleneck as the paper.
    # With SGD (solo-learn's CIFAR lr 0.5*B/256) it learned too slowly: 86.4%
    # linear top-1 at wd 1e-4, 87.2% at 5e-4, 86.7% at B 128, under the
    # pixels' 88.4%. byol.py:small's optimizer and budget (SimSiam is "BYOL
    # without the momentum encoder", the paper's introduction): LARS lr
    # 4.0*B/256, wd 1.5e-6, BN and biases excluded, 900 steps of 128:
    # 93.0% and 93.8% (two seeds; +4.6 and +5.4), in 428 s.
    use_small_data(c, batch_size=128)
    c.head.hidden_dim = 128
    c.head.output_dim = 128
    c.predictor = predictor(hidden_dim=32, output_dim=128)
    c.optimizer, c.learning_rate = "lars", 4.0
    c.weight_decay, c.weight_decay_mask = 1.5e-6, "exclude_bn_bias"
  else:  # digits
    use_pretraining_dataset(c, "digits")   # tiny ResNet x2, 16 px, B=256
    c.head.hidden_dim = 64
    c.head.output_dim = 64
    c.predictor = predictor(hidden_dim=16, output_dim=64)
    c.view_augment = moco_views(16, version=2, blur=False,
                                crop_area=(0.25, 1.0))
    c.num_epochs = 30
    c.learning_rate = 0.5
    c.warmup_epochs = 2.0
  return c


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  simsiam.yaml, "aug" scripts/pretrain/cifar/augmentations/
  symmetric_weak.yaml."""
  use_pretraining_dataset(c, "cifar10")    # ResNet-18, CIFAR stem, 32 px
  c.head.hidden_dim = 2048                 # yaml:19
  c.head.output_dim = 2048                 # yaml:20
  c.predictor = predictor(hidden_dim=512, output_dim=2048)  # yaml:21
  c.batch_size = 256                       # yaml:31
  c.num_epochs = 1000                      # yaml:45
  c.learning_rate = 0.5                    # yaml:32, x B/256
  c.weight_decay = 1e-5                    # yaml:34
  c.warmup_epochs = 10.0                   # solo/methods/base.py:293
  # SGD (yaml:30; momentum 0.9, solo/args/pretrain.py:161-162) with wd on
  # every parameter (exclude_bias_n_norm_wd defaults to False, solo/
  # methods/base.py:280-282): set above. torchvision's resnet18 with its
  # defaults (solo/backbones/resnet/__init__.py:24-25, resnet.py:20):
  # zero_init_residual=False.
  c.zero_init_residual = False
  c.input_norm = "cifar10_solo"            # solo/data/pretrain_
                                           #   dataloader.py:207
  # aug: torchvision's RandomResizedCrop 0.08-1 (10 attempts, bicubic),
  # jitter 0.4/0.4/0.4/0.1 p=0.8, grayscale 0.2, blur 0.5 (sigma 0.1-2),
  # flip. The blur is PIL's GaussianBlur(radius=sigma) (solo/data/
  # pretrain_dataloader.py:77-102, :254): measured on an impulse, its
  # footprint at sigma 2 is +-5 px with std 2.03. 10% of 32 px would be 3
  # taps (std at most 0.80); 13 taps (+-3 sigma at sigma 2) give std 1.99.
  c.view_augment = "|".join([
      "random_resized_crop(32, area=(0.08, 1.0), impl='torchvision', "
      "max_attempts=10)",
      "color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
      "saturation=0.4, hue=0.1, impl='torchvision')",
      "grayscale(p=0.2)",
      "gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_size=13)",
      "flip_lr(p=0.5)"])
