"""VICReg (Bardes, Ponce & LeCun 2022) pretraining.

"ref" is facebookresearch/vicreg @4e12602 (docs/recipes.md cites each
number's line), "solo" vturrisi/solo-learn @9187ea3.

Variants (`--config=configs/vicreg.py:VARIANT`):
  imagenet (default) the reference's 1000-epoch command (README.md:80):
           ResNet-50 (torchvision init, zero-initialised last BN gamma),
           B=2048, 1000 epochs, LARS (eta 1e-3, momentum 0.9, biases and
           BN excluded from decay and adaptation), lr 0.2*B/256, wd 1e-6,
           10 warmup epochs + cosine, coefficients 25 / 25 / 1, projector
           8192-8192-8192 (Linear with bias, BN, ReLU; last Linear no
           bias); BYOL's asymmetric views with torchvision's crop and
           jitter; ImageNet mean/std. 73.2% linear top-1 (README.md:33).
  cifar10  solo-learn's CIFAR-10 recipe (scripts/pretrain/cifar/vicreg.yaml):
           ResNet-18 with CIFAR stem, B=256, 1000 epochs, lr 0.3*B/256, wd
           1e-4, projector 2048-2048-2048 with biases, coefficients 25 /
           50 / 1 in the reference's convention (solo's variance term sums
           the views), symmetric views (crop 0.2-1, no blur, solarize
           0.1), its CIFAR-10 std; solo-learn's LARS (`lars_solo`: eta
           0.02, lr clipping). Its 92.07% is not reproduced here.
  small    your own folder (configs/simclr.py:small's data, model, views and
           step budget), projector 256-256-256: 93.7% linear top-1 on real
           MNIST-5k against the pixels' 88.4% (BENCHMARKS.md "Small data").
  digits   offline demo on scikit-learn's handwritten digits (tiny ResNet x2,
           16 px, B=256, 30 epochs).
"""

from contrastive_jax.config.defaults import (base_config,
                                             use_pretraining_dataset,
                                             use_small_data, variant_of)
from contrastive_jax.config.joint_embedding import projector, views

VARIANTS = ("imagenet", "cifar10", "small", "digits")


def get_config(arg: str | None = None):
  variant = variant_of("vicreg", arg, VARIANTS, default="imagenet")
  c = base_config()
  c.method = "vicreg"
  # --sim-coeff, --std-coeff, --cov-coeff (ref main_vicreg.py:58-63).
  c.invariance_weight = 25.0
  c.variance_weight = 25.0
  c.covariance_weight = 1.0
  # LARS, eta 1e-3, momentum 0.9 (ref main_vicreg.py:245-255), biases and
  # BN (every 1-D parameter) excluded from decay and adaptation (:109-115,
  # :235-236); lr * B/256 (:170), 10 warmup epochs from 0 (:169,
  # :171-172), then a cosine (:173-178; its floor of 0.001x is not ours:
  # docs/recipes.md).
  c.optimizer, c.momentum = "lars", 0.9
  c.lr_scaling, c.lr_schedule = "linear", "cosine"
  c.warmup_epochs = 10.0
  c.weight_decay_mask = "exclude_bn_bias"
  # Its ResNet-50 with zero_init_residual=True (ref main_vicreg.py:189-191),
  # torchvision's init (ref resnet.py:220-235).
  c.conv_init, c.zero_init_residual = "torchvision", True
  if variant == "imagenet":
    use_pretraining_dataset(c, "imagenet")
    c.batch_size = 2048                    # ref README.md:80
    c.num_epochs = 1000                    # ref README.md:80
    c.learning_rate = 0.2                  # ref README.md:80
    c.weight_decay = 1e-6                  # ref main_vicreg.py:54
    c.head = projector(hidden_dim=8192, output_dim=8192,  # ref main_vicreg
                       hidden_bias=True)                  #   .py:44, :223-232
    c.input_norm = "imagenet"              # ref augmentations.py:57-59
    c.view_augment, c.view_augment_2 = views(224)  # ref augmentations.py:
                                                   #   37-89
  elif variant == "cifar10":
    _solo_learn_cifar10(c)
  elif variant == "small":
    use_small_data(c)
    c.head = projector(hidden_dim=256, output_dim=256, hidden_bias=True)
    # The digits demo's numbers; measured on MNIST-5k (BENCHMARKS.md
    # "Small data"): 93.7% linear top-1, +5.3 over the pixels, in 551 s.
    c.learning_rate, c.weight_decay = 2.0, 1e-6
  else:  # digits
    use_pretraining_dataset(c, "digits")   # tiny ResNet x2, 16 px, B=256
    c.head = projector(hidden_dim=128, output_dim=128, hidden_bias=True)
    # The digits are 8x8 strokes: very small crops erase the digit; the
    # blur is the identity below 20 px anyway.
    c.view_augment, c.view_augment_2 = views(16, crop_area=(0.25, 1.0))
    c.num_epochs = 30
    c.learning_rate, c.weight_decay = 2.0, 1e-6
    c.warmup_epochs = 2.0
  return c


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  vicreg.yaml."""
  use_pretraining_dataset(c, "cifar10")    # ResNet-18, CIFAR stem, 32 px
  # torchvision's resnet18 as built (solo/backbones/resnet/resnet.py:20):
  # zero_init_residual=False.
  c.zero_init_residual = False
  c.batch_size = 256                       # yaml:60
  c.num_epochs = 1000                      # yaml:78
  c.learning_rate = 0.3                    # yaml:61, x B/256 (solo/args/
  c.weight_decay = 1e-4                    # yaml:63   pretrain.py:153-154)
  c.warmup_epochs = 10.0                   # solo/methods/base.py:293
  c.input_norm = "cifar10_solo"            # solo/data/pretrain_
                                           #   dataloader.py:207 (its std)
  # solo-learn's LARS (solo/utils/lars.py; optim.lars_solo): eta 0.02, the
  # trust ratio clipped at the lr, BN and biases (ndim 1) get plain g.
  c.optimizer = "lars_solo"                # yaml:59
  c.lars_clip_lr = True                    # yaml:65
  c.lars_eta = 0.02                        # yaml:66
  c.lars_adapt_mask = "exclude_bn_bias"    # yaml:67 exclude_bias_n_norm
  # yaml:20-22; solo's variance term is the SUM of the two views' hinges
  # (solo/losses/vicreg.py:55), the reference's their mean: its 25 is 50
  # here.
  c.invariance_weight, c.variance_weight, c.covariance_weight = (
      25.0, 50.0, 1.0)
  # nn.Linear with bias everywhere (solo/methods/vicreg.py:53-61);
  # yaml:18-19.
  c.head = projector(hidden_dim=2048, output_dim=2048, hidden_bias=True,
                     output_bias=True)
  # yaml:29-57: the same pipeline for both views: crop 0.2-1, jitter
  # 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2, no blur, solarize 0.1, flip 0.5.
  c.view_augment, c.view_augment_2 = views(32, crop_area=(0.2, 1.0),
                                           blur=(0.0, 0.0),
                                           solarize=(0.1, 0.1))
