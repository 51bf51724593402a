"""Barlow Twins (Zbontar et al. 2021) pretraining.

"ref" is facebookresearch/barlowtwins @8e8d284 (main.py; the README table
cites each number's line), "solo" vturrisi/solo-learn @9187ea3.

Variants (`--config=configs/barlow_twins.py:VARIANT`):
  imagenet (default) the reference's README command (`python main.py
           /path/to/imagenet/`, its defaults): ResNet-50 (torchvision init,
           zero-initialised last BN gamma), B=2048, 1000 epochs, LARS (eta
           1e-3, momentum 0.9, biases and BN excluded from decay and
           adaptation), lr 0.2*B/256 for weights and 0.0048*B/256 for
           biases and BN, wd 1e-6, 10 warmup epochs + cosine, lambda
           0.0051, projector 8192-8192-8192 (Linear no bias, BN, ReLU;
           last Linear no bias), loss x 1/16 (its 16 GPUs' gradient, see
           methods/barlow_twins.py); BYOL's asymmetric views with
           torchvision's crop and jitter; ImageNet mean/std. README: 73.5%
           linear top-1 (paper: 73.2%).
  cifar10  solo-learn's CIFAR-10 recipe (scripts/pretrain/cifar/barlow.yaml):
           ResNet-18 with CIFAR stem, B=256, 1000 epochs, lr 0.3*B/256 for
           every parameter, wd 1e-4, projector 2048-2048-2048 with biases,
           loss x 0.1, lambda 0.0051, no blur, solarize 0 / 0.2, its
           CIFAR-10 std; solo-learn's LARS (`lars_solo`: eta 0.02, lr
           clipping). Its 92.10% is not reproduced here.
  small    your own folder (configs/simclr.py:small's data, model, views and
           step budget), projector 256-256-256: 89.7% linear top-1 on real
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
  variant = variant_of("barlow_twins", arg, VARIANTS, default="imagenet")
  c = base_config()
  c.method = "barlow_twins"
  c.off_diagonal_weight = 0.0051           # --lambd, ref main.py:39
  # The reference's update on its 16 GPUs (README.md:60): see
  # methods/barlow_twins.py.
  c.loss_scale = 1 / 16
  # LARS, eta 1e-3, momentum 0.9 (ref main.py:225), biases and BN (every
  # 1-D parameter) excluded from decay and adaptation (:99-101, :233-234);
  # lr * B/256 (:158), 10 warmup epochs from 0 (:157, :159-160), then a
  # cosine (:161-166; its floor of 0.001x is not ours: docs/recipes.md).
  c.optimizer, c.momentum = "lars", 0.9
  c.lr_scaling, c.lr_schedule = "linear", "cosine"
  c.warmup_epochs = 10.0
  c.weight_decay_mask = "exclude_bn_bias"
  # Biases and BN: the second parameter group's base lr (ref main.py:35,
  # :90-97, :168).
  c.learning_rate, c.bias_learning_rate = 0.2, 0.0048   # ref main.py:33, :35
  # torchvision's ResNet-50 with zero_init_residual=True (ref main.py:191).
  c.conv_init, c.zero_init_residual = "torchvision", True
  if variant == "imagenet":
    use_pretraining_dataset(c, "imagenet")
    c.batch_size = 2048                    # ref main.py:31
    c.num_epochs = 1000                    # ref main.py:29
    c.weight_decay = 1e-6                  # ref main.py:37 (paper: 1.5e-6)
    c.head = projector(hidden_dim=8192, output_dim=8192,  # ref main.py:41,
                       hidden_bias=False)                 #   :195-202
    c.input_norm = "imagenet"              # ref main.py:304-305
    c.view_augment, c.view_augment_2 = views(224)  # ref main.py:290-326
  elif variant == "cifar10":
    _solo_learn_cifar10(c)
  elif variant == "small":
    use_small_data(c)
    c.head = projector(hidden_dim=256, output_dim=256, hidden_bias=False)
    # The digits demo's numbers; measured on MNIST-5k (BENCHMARKS.md
    # "Small data"): 89.7% linear top-1, +1.3 over the pixels, in 694 s.
    c.learning_rate, c.bias_learning_rate = 2.0, 0.048
    c.weight_decay = 1e-6
  else:  # digits
    use_pretraining_dataset(c, "digits")   # tiny ResNet x2, 16 px, B=256
    c.head = projector(hidden_dim=128, output_dim=128, hidden_bias=False)
    # The digits are 8x8 strokes: very small crops erase the digit; the
    # blur is the identity below 20 px anyway.
    c.view_augment, c.view_augment_2 = views(16, crop_area=(0.25, 1.0))
    c.num_epochs = 30
    # A 150-step run: ImageNet's lr ratio weights/biases, a higher lr.
    c.learning_rate, c.bias_learning_rate = 2.0, 0.048
    c.weight_decay = 1e-6
    c.warmup_epochs = 2.0
  return c


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  barlow.yaml, "aug" scripts/pretrain/cifar/augmentations/asymmetric.yaml."""
  use_pretraining_dataset(c, "cifar10")    # ResNet-18, CIFAR stem, 32 px
  # torchvision's resnet18 as built (solo/backbones/resnet/resnet.py:20):
  # zero_init_residual=False.
  c.zero_init_residual = False
  c.batch_size = 256                       # yaml:30
  c.num_epochs = 1000                      # yaml:48
  # One lr for every parameter (solo/methods/base.py: one group per
  # module), x B/256 (solo/args/pretrain.py:153-154).
  c.learning_rate = c.bias_learning_rate = 0.3   # yaml:31
  c.weight_decay = 1e-4                    # yaml:33
  c.loss_scale = 0.1                       # yaml:21 (scale_loss)
  c.off_diagonal_weight = 0.0051           # solo/methods/barlow_twins.py:77
  c.warmup_epochs = 10.0                   # solo/methods/base.py:293
  c.input_norm = "cifar10_solo"            # solo/data/pretrain_
                                           #   dataloader.py:207 (its std)
  # solo-learn's LARS (solo/utils/lars.py; optim.lars_solo): eta 0.02, the
  # trust ratio clipped at the lr, BN and biases (ndim 1) get plain g.
  c.optimizer = "lars_solo"                # yaml:29
  c.lars_clip_lr = True                    # yaml:35
  c.lars_eta = 0.02                        # yaml:36
  c.lars_adapt_mask = "exclude_bn_bias"    # yaml:37 exclude_bias_n_norm
  # nn.Linear with bias everywhere (solo/methods/barlow_twins.py:51-59);
  # yaml:19-20.
  c.head = projector(hidden_dim=2048, output_dim=2048, hidden_bias=True,
                     output_bias=True)
  # aug: crop 0.08-1, jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2, no
  # blur, solarize 0 / 0.2, flip 0.5.
  c.view_augment, c.view_augment_2 = views(32, blur=(0.0, 0.0),
                                           solarize=(0.0, 0.2))
