"""MoCo v3 (Chen, Xie & He 2021) pretraining, ResNet or ViT backbone.

"ref" is facebookresearch/moco-v3 @c349e6e (docs/recipes.md cites each
number's line); the ResNet-50 and ViT variants are its CONFIG.md commands.

Variants (`--config=configs/moco_v3.py:VARIANT`):
  r50 (default) CONFIG.md's 100-epoch ResNet-50 command (main_moco.py's
           defaults plus `--moco-m-cos --crop-min=.2`): B=4096, LARS lr
           0.6*B/256 (eta 1e-3, momentum 0.9, BN and biases excluded from
           decay and trust ratio), wd 1e-6, 10 warmup epochs + cosine,
           momentum encoder 0.99 -> 1 (cosine), tau 1.0; projector
           Linear(4096)-BN-ReLU-Linear(256)-BN(no affine), predictor
           Linear(4096)-BN-ReLU-Linear(256); torchvision ResNet-50 with
           zero-initialised last BN gamma; BYOL's asymmetric views with
           torchvision's crop (0.2-1) and jitter. Linear top-1 68.9%.
  r50_300  the 300-epoch command: lr 0.3*B/256. 72.8%.
  r50_1000 the 1000-epoch command: lr 0.3*B/256, wd 1.5e-6, m 0.996 -> 1.
           74.6%.
  vit_small CONFIG.md's 1-node ViT-Small command (CONFIG.md:104-117):
           ViT-S/16 (384 wide, 12 blocks, 12 heads), 224 px, B=1024, AdamW
           lr 1.5e-4*B/256, wd 0.1 on every parameter, 300 epochs, 40 warmup
           epochs + cosine, tau 0.2, momentum encoder 0.99 -> 1 (cosine),
           frozen patch projection (--stop-grad-conv1, Method.frozen);
           projector 3 layers 4096 -> 256 with BN (no affine) on the output,
           predictor 2 layers 4096 -> 256 with the same output BN; crop
           0.08-1. The published 73.2% is of a B=4096 run (CONFIG.md:183,
           :194-200; the 4-node command, :121-136, has the default 4096).
  vit_base the ViT-Base command (CONFIG.md:152-166): ViT-B/16 (768 wide),
           B=4096, otherwise as vit_small. 76.7%.
  cifar10  solo-learn's CIFAR-10 MoCo v3 recipe (vturrisi/solo-learn
           scripts/pretrain/cifar/mocov3.yaml @9187ea3): ResNet-18 with
           CIFAR stem, B=256, 1000 epochs, lr 0.3*B/256, wd 1e-6, tau 0.2,
           m 0.99 -> 1, no blur, solarize 0 / 0.2, solo-learn's LARS
           (`lars_solo`: eta 0.02, lr clipping) and CIFAR-10 std. Its
           published figure is not reproduced here.
  digits   offline demo on scikit-learn's handwritten digits: a tiny ResNet
           that trains in about a minute on 2 CPU cores.
"""

import ml_collections

from contrastive_jax.config.defaults import (base_config, moco_crop,
                                             use_pretraining_dataset,
                                             use_small_data, variant_of)
from contrastive_jax.config.joint_embedding import two_views

VARIANTS = ("r50", "r50_300", "r50_1000", "vit_small", "vit_base", "cifar10",
            "small", "digits")

# Per ResNet-50 command (ref CONFIG.md:14-15, :28-30, :43-45; the rest are
# main_moco.py's defaults, :56, :65, :69, :99): epochs -> (base lr, weight
# decay, base momentum m).
_PRESETS = {"r50": (100, 0.6, 1e-6, 0.99),
            "r50_300": (300, 0.3, 1e-6, 0.99),
            "r50_1000": (1000, 0.3, 1.5e-6, 0.996)}

# Per ViT command (ref CONFIG.md:109-113 ViT-S 1-node, :156-160 ViT-B):
# variant -> (encoder, batch size). ViT-S's 1-node command passes -b 1024;
# ViT-B's (and ViT-S's 4-node, :126-130) keeps the default 4096
# (main_moco.py:60).
_VIT_PRESETS = {"vit_small": ("vit_small", 1024),
                "vit_base": ("vit_base", 4096)}


def mlp(*, num_layers: int, hidden_dim: int, output_dim: int,
        last_bn: bool) -> ml_collections.ConfigDict:
  """`_build_mlp` (ref moco/builder.py:36-52): Linear (no bias) -> BN ->
  ReLU per hidden layer, the last Linear (no bias) followed, if `last_bn`,
  by a BN without affine parameters; PyTorch's default nn.Linear init."""
  return ml_collections.ConfigDict(dict(
      num_layers=num_layers, hidden_dim=hidden_dim, output_dim=output_dim,
      use_bn=True, output_bn=last_bn, output_bn_scale=False,
      output_bias=False, dense_init="torch_linear"))


def moco_v3_views(crop: str, *, blur=(1.0, 0.1), solarize=(0.0, 0.2)
                  ) -> tuple[str, str]:
  """The two asymmetric views (ref main_moco.py:261-285), in the
  reference's order: `crop`, colour jitter 0.4/0.4/0.2/0.1 with p=0.8
  (torchvision's ColorJitter), grayscale 0.2, blur (sigma 0.1-2) with
  p = blur[v], solarize with p = solarize[v], flip: `two_views` with the
  flip last (Barlow Twins' and VICReg's have it after the crop)."""
  return two_views(crop, flip_after_crop=False, blur=blur, solarize=solarize)


def get_config(arg: str | None = None):
  variant = variant_of("moco_v3", arg, VARIANTS, "r50")
  c = base_config()
  c.method = "moco_v3"
  # Projector _build_mlp(2, 2048, 4096, 256) with the last BN, predictor
  # _build_mlp(2, 256, 4096, 256, last_bn=False) (ref builder.py:104-109;
  # --moco-dim 256, --moco-mlp-dim 4096, main_moco.py:95-98).
  c.head = mlp(num_layers=2, hidden_dim=4096, output_dim=256, last_bn=True)
  c.predictor = mlp(num_layers=2, hidden_dim=4096, output_dim=256,
                    last_bn=False)
  c.temperature = 1.0                      # --moco-t, main_moco.py:104
  # Momentum encoder = EMA of encoder + projector, m from the base up to 1
  # along a half cosine (--moco-m-cos, main_moco.py:101-103, :431-434).
  c.ema_momentum_schedule = "cosine"
  # LARS (ref moco/optimizer.py:10-43: eta 1e-3, momentum 0.9, params with
  # ndim <= 1, BN and biases, get neither decay nor trust ratio;
  # main_moco.py:112-114, :224-227); lr * B / 256 (:190); linear warmup,
  # then half-cycle cosine to 0 (:115-116, :420-428).
  c.optimizer, c.momentum = "lars", 0.9
  c.lr_scaling, c.lr_schedule = "linear", "cosine"
  c.warmup_epochs = 10.0
  c.weight_decay_mask = "exclude_bn_bias"
  # torchvision's ResNet built with zero_init_residual=True (main_moco.py:
  # 186): kaiming normal fan_out convs; ImageNet mean/std (:258-259).
  c.conv_init, c.zero_init_residual = "torchvision", True
  c.input_norm = "imagenet"
  if variant in _PRESETS:
    use_pretraining_dataset(c, "imagenet")  # ResNet-50 (main_moco.py:49)
    c.batch_size = 4096                    # main_moco.py:60
    (c.num_epochs, c.learning_rate, c.weight_decay,
     c.ema_momentum) = _PRESETS[variant]
    # RandomResizedCrop(224, scale=(.2, 1)) (main_moco.py:263, :275;
    # --crop-min=.2 in every CONFIG.md command).
    c.view_augment, c.view_augment_2 = moco_v3_views(
        moco_crop(224, (0.2, 1.0)))
  elif variant in _VIT_PRESETS:
    _vit(c, *_VIT_PRESETS[variant])
  elif variant == "cifar10":
    _solo_learn_cifar10(c)
  elif variant == "small":
    # Your own folder (configs/simclr.py:small's data, model and views);
    # MoCo v3's numbers measured on real MNIST (BENCHMARKS.md "Small
    # data").
    use_small_data(c)
    c.head = mlp(num_layers=2, hidden_dim=256, output_dim=64, last_bn=True)
    c.predictor = mlp(num_layers=2, hidden_dim=256, output_dim=64,
                      last_bn=False)
    # Measured: lr 1.0 with tau 0.2 gave 86.4% linear top-1, 2 points
    # under the pixels' 88.4%; the digits demo's lr 4.0 with SimCLR's
    # small-data tau 0.5 gave 90.6% (+2.2); the reference's own ResNet
    # tau 1.0 (--moco-t, main_moco.py:104) gives 91.8% (+3.4), in 464 s,
    # and 92.5% (+4.1) with seed 1.
    c.learning_rate, c.weight_decay = 4.0, 1e-6
    c.temperature, c.ema_momentum = 1.0, 0.98
  else:  # digits
    use_pretraining_dataset(c, "digits")   # tiny ResNet x2, 16 px, B=256
    c.head = mlp(num_layers=2, hidden_dim=64, output_dim=32, last_bn=True)
    c.predictor = mlp(num_layers=2, hidden_dim=64, output_dim=32,
                      last_bn=False)
    # The digits are 8x8 strokes: very small crops erase the digit; the
    # blur is the identity below 20 px anyway.
    c.view_augment, c.view_augment_2 = moco_v3_views(
        moco_crop(16, (0.25, 1.0)))
    # A 150-step run: a higher lr, a sharper softmax and a faster momentum
    # encoder than ImageNet's (docs/recipes.md "MoCo v3: per config").
    c.num_epochs = 30
    c.learning_rate, c.weight_decay = 4.0, 1e-6
    c.temperature, c.ema_momentum = 0.2, 0.96
    c.warmup_epochs = 2.0
  return c


def _vit(c, model: str, batch_size: int):
  """The ViT commands (ref CONFIG.md:104-166): `-a vit_small|vit_base
  --optimizer=adamw --lr=1.5e-4 --weight-decay=.1 --epochs=300
  --warmup-epochs=40 --stop-grad-conv1 --moco-m-cos --moco-t=.2`; every other
  number is main_moco.py's default."""
  use_pretraining_dataset(c, "imagenet")   # 224 px, ImageNet-1k
  c.model = model                          # vits.py:115-126
  c.patch_size = 16                        # vits.py:117, :124
  c.cifar_stem, c.width_multiplier = False, 1
  # ImageNet mean/std as above (main_moco.py:258-259); conv_init and
  # zero_init_residual stay as set above, unread by a ViT (its init is
  # vits.py's, models/vit.py), as is `momentum` by AdamW.
  c.batch_size = batch_size                # see _VIT_PRESETS
  # Projector _build_mlp(3, D, 4096, 256) and predictor
  # _build_mlp(2, 256, 4096, 256), both ending in BatchNorm1d(affine=False)
  # (ref builder.py:112-122: the predictor keeps the default last_bn=True,
  # unlike the ResNet's, :109; builder.py:36-52).
  c.head = mlp(num_layers=3, hidden_dim=4096, output_dim=256, last_bn=True)
  c.predictor = mlp(num_layers=2, hidden_dim=4096, output_dim=256,
                    last_bn=True)
  c.temperature = 0.2                      # --moco-t=.2
  c.ema_momentum = 0.99                    # --moco-m default (main_moco.py:
                                           #   99), cosine to 1 (--moco-m-cos)
  # torch.optim.AdamW(model.parameters(), lr, weight_decay=.1) (main_moco.py:
  # 228-230), torch's default betas (0.9, 0.999) and eps 1e-8 (= optax's):
  # decoupled decay on every trainable parameter, LayerNorms, biases and the
  # cls token included ('all'). The frozen patch projection (--stop-grad-
  # conv1) and the fixed positions get no step at all (methods/moco_v3.py
  # `stop_grad_conv1`; models/vit.py).
  c.optimizer = "adamw"
  c.learning_rate = 1.5e-4                 # x B/256 (main_moco.py:190)
  c.weight_decay = 0.1
  c.weight_decay_mask = "all"
  c.num_epochs = 300
  c.warmup_epochs = 40.0
  # `--crop-min` is not passed: its default 0.08 (main_moco.py:117, :263,
  # :275).
  c.view_augment, c.view_augment_2 = moco_v3_views(
      moco_crop(224, (0.08, 1.0)))


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  mocov3.yaml, "aug" scripts/pretrain/cifar/augmentations/asymmetric.yaml,
  "solo" the package."""
  use_pretraining_dataset(c, "cifar10")    # ResNet-18 (yaml:17), CIFAR
                                           #   stem (solo/methods/base.py:
                                           #   198-203), 32 px
  c.head = mlp(num_layers=2, hidden_dim=4096, output_dim=256,
               last_bn=True)               # yaml:19-20; solo/methods/
                                           #   mocov3.py:52-57, :101-116
  c.predictor = mlp(num_layers=2, hidden_dim=4096, output_dim=256,
                    last_bn=False)         # yaml:21; mocov3.py:67-73
  c.temperature = 0.2                      # yaml:22
  c.ema_momentum = 0.99                    # yaml:23-25 (to 1.0)
  c.batch_size = 256                       # yaml:34
  c.num_epochs = 1000                      # yaml:52
  c.learning_rate = 0.3                    # yaml:35, x B/256 (solo/args/
                                           #   pretrain.py:151-154)
  c.weight_decay = 1e-6                    # yaml:37
  c.warmup_epochs = 10.0                   # solo/methods/base.py:293
  # solo-learn's LARS (solo/utils/lars.py; optim.lars_solo): eta 0.02, the
  # trust ratio clipped at the lr, BN and biases (ndim 1) get plain g.
  c.optimizer = "lars_solo"                # yaml:33
  c.lars_clip_lr = True                    # yaml:39
  c.lars_eta = 0.02                        # yaml:40
  c.lars_adapt_mask = "exclude_bn_bias"    # yaml:41 exclude_bias_n_norm
  # torchvision's resnet18 with its defaults (solo/backbones/resnet/
  # __init__.py:24-25, resnet.py:20): zero_init_residual=False; CIFAR-10
  # mean and solo-learn's std (solo/data/pretrain_dataloader.py:207).
  c.zero_init_residual = False
  c.input_norm = "cifar10_solo"
  # aug: RandomResizedCrop 0.08-1 (bicubic, solo/data/pretrain_dataloader.
  # py:220-225), jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2, no blur,
  # solarize 0 / 0.2, flip 0.5 (aug:1-45).
  c.view_augment, c.view_augment_2 = moco_v3_views(
      "random_resized_crop(32, area=(0.08, 1.0), impl='torchvision', "
      "max_attempts=10)", blur=(0.0, 0.0), solarize=(0.0, 0.2))
