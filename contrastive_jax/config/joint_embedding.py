"""What the Barlow Twins and VICReg configs share, and the two-view
builder MoCo v3's config shares with them.

"bt" is facebookresearch/barlowtwins @8e8d284, "vr" facebookresearch/vicreg
@4e12602: the same code base's (their `Transform`, projector loops and
optimisation are line for line alike); "solo" is vturrisi/solo-learn
@9187ea3, whose scripts/pretrain/cifar/barlow.yaml ("barlow.yaml") and
vicreg.yaml differ in the objective's fields and the views only.

The variants both configs have (`get_config`; each config then sets its
method's own numbers):
  imagenet the references' 1000-epoch ImageNet command: ResNet-50
           (torchvision init, zero-initialised last BN gamma), B=2048,
           1000 epochs, LARS (eta 1e-3, momentum 0.9, biases and BN
           excluded from decay and adaptation), lr 0.2*B/256, wd 1e-6, 10
           warmup epochs + cosine, projector 8192-8192-8192 (Linear, BN,
           ReLU; last Linear no bias); BYOL's asymmetric views with
           torchvision's crop and jitter; ImageNet mean/std.
  cifar10  solo-learn's CIFAR-10 recipe: ResNet-18 with CIFAR stem, B=256,
           1000 epochs, lr 0.3*B/256, wd 1e-4, projector 2048-2048-2048
           with biases, its CIFAR-10 std; solo-learn's LARS (`lars_solo`:
           eta 0.02, lr clipping). The views are each method's.
  small    your own folder (configs/simclr.py:small's data, model, views
           and step budget), projector 256-256-256, lr 2.0, wd 1e-6.
  digits   offline demo on scikit-learn's handwritten digits (tiny ResNet
           x2, 16 px, B=256, 30 epochs), projector 128-128-128, lr 2.0, wd
           1e-6, 2 warmup epochs.
"""

import ml_collections

from contrastive_jax.config.defaults import (base_config,
                                             use_pretraining_dataset,
                                             use_small_data, variant_of)

VARIANTS = ("imagenet", "cifar10", "small", "digits")

_JITTER = ("color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
           "saturation=0.2, hue=0.1, impl='torchvision')")


def two_views(crop: str, *, flip_after_crop: bool, blur=(1.0, 0.1),
              solarize=(0.0, 0.2)) -> tuple[str, str]:
  """BYOL's two asymmetric views as these PyTorch references write them:
  `crop`, torchvision's ColorJitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale
  0.2, blur (sigma 0.1-2) with p = blur[v], solarize (threshold 128) with
  p = solarize[v], and a flip 0.5 right after the crop (`flip_after_crop`:
  Barlow Twins', VICReg's) or last (MoCo v3's). Ops with p = 0 are left
  out, as the references (and solo-learn) leave them out."""
  out = []
  for blur_p, solarize_p in zip(blur, solarize):
    ops = [crop, _JITTER, "grayscale(p=0.2)"]
    if blur_p:
      ops.append(f"gaussian_blur(p={blur_p}, sigma=(0.1, 2.0), "
                 "kernel_fraction=0.1)")
    if solarize_p:
      ops.append(f"solarize(p={solarize_p}, threshold=0.5)")
    ops.insert(1 if flip_after_crop else len(ops), "flip_lr(p=0.5)")
    out.append("|".join(ops))
  return out[0], out[1]


def views(image_size: int, *, crop_area=(0.08, 1.0), blur=(1.0, 0.1),
          solarize=(0.0, 0.2)) -> tuple[str, str]:
  """The two views of bt main.py:290-326 (= vr augmentations.py:37-89), in
  their order: torchvision's RandomResizedCrop (10 attempts, PIL's bicubic
  resize, antialiased), flip 0.5, then `two_views`' colour, blur and
  solarize."""
  crop = (f"random_resized_crop({image_size}, area={tuple(crop_area)}, "
          "impl='torchvision', max_attempts=10, method='bicubic', "
          "antialias=True)")
  return two_views(crop, flip_after_crop=True, blur=blur, solarize=solarize)


def projector(*, hidden_dim: int, output_dim: int, hidden_bias: bool,
              output_bias: bool = False) -> ml_collections.ConfigDict:
  """Linear -> BN -> ReLU twice, then a Linear with no BN or ReLU after it
  (bt main.py:195-202, vr main_vicreg.py:223-232), with PyTorch's default
  nn.Linear init."""
  return ml_collections.ConfigDict(dict(
      num_layers=3, hidden_dim=hidden_dim, output_dim=output_dim,
      use_bn=True, output_bn=False, output_bn_scale=True,
      hidden_bias=hidden_bias, output_bias=output_bias,
      dense_init="torch_linear", kernel_init_stddev=-1.0))


def get_config(method: str, arg: str | None, *, hidden_bias: bool
               ) -> tuple[str, ml_collections.ConfigDict]:
  """(variant, the config of `method:variant` up to the method's own
  numbers). `hidden_bias`: the projector's hidden Linear layers have a
  bias (VICReg's) or not (Barlow Twins')."""
  variant = variant_of(method, arg, VARIANTS, default="imagenet")
  c = base_config()
  c.method = method
  # LARS, eta 1e-3, momentum 0.9 (bt main.py:225, vr main_vicreg.py:
  # 245-255), biases and BN (every 1-D parameter) excluded from decay and
  # adaptation (bt :99-101, :233-234; vr :109-115, :235-236); lr * B/256
  # (bt :158, vr :170), 10 warmup epochs from 0 (bt :157, :159-160; vr
  # :169, :171-172), then a cosine (bt :161-166, vr :173-178; its floor of
  # 0.001x is not ours: docs/recipes.md).
  c.optimizer, c.momentum = "lars", 0.9
  c.lr_scaling, c.lr_schedule = "linear", "cosine"
  c.warmup_epochs = 10.0
  c.weight_decay_mask = "exclude_bn_bias"
  # torchvision's ResNet-50 with zero_init_residual=True (bt main.py:191,
  # vr main_vicreg.py:189-191 and its resnet.py:220-235).
  c.conv_init, c.zero_init_residual = "torchvision", True
  if variant == "imagenet":
    use_pretraining_dataset(c, "imagenet")
    c.batch_size = 2048                    # bt main.py:31, vr README.md:80
    c.num_epochs = 1000                    # bt main.py:29, vr README.md:80
    c.learning_rate = 0.2                  # bt main.py:33, vr README.md:80
    # bt main.py:37 (paper: 1.5e-6), vr main_vicreg.py:54.
    c.weight_decay = 1e-6
    # bt main.py:41, vr main_vicreg.py:44.
    c.head = projector(hidden_dim=8192, output_dim=8192,
                       hidden_bias=hidden_bias)
    c.input_norm = "imagenet"              # bt main.py:304-305, vr
                                           #   augmentations.py:57-59
    c.view_augment, c.view_augment_2 = views(224)
  elif variant == "cifar10":
    _solo_learn_cifar10(c)
  elif variant == "small":
    use_small_data(c)
    c.head = projector(hidden_dim=256, output_dim=256,
                       hidden_bias=hidden_bias)
    # The digits demo's numbers (each config cites its measurement).
    c.learning_rate, c.weight_decay = 2.0, 1e-6
  else:  # digits
    use_pretraining_dataset(c, "digits")   # tiny ResNet x2, 16 px, B=256
    c.head = projector(hidden_dim=128, output_dim=128,
                       hidden_bias=hidden_bias)
    # The digits are 8x8 strokes: very small crops erase the digit; the
    # blur is the identity below 20 px anyway.
    c.view_augment, c.view_augment_2 = views(16, crop_area=(0.25, 1.0))
    # A 150-step run: a higher lr.
    c.num_epochs = 30
    c.learning_rate, c.weight_decay = 2.0, 1e-6
    c.warmup_epochs = 2.0
  return variant, c


def _solo_learn_cifar10(c):
  """What solo-learn's barlow.yaml and vicreg.yaml share; ":N / :M" cites
  line N of barlow.yaml and line M of vicreg.yaml."""
  use_pretraining_dataset(c, "cifar10")    # ResNet-18, CIFAR stem, 32 px
  # torchvision's resnet18 as built (solo/backbones/resnet/resnet.py:20):
  # zero_init_residual=False.
  c.zero_init_residual = False
  c.batch_size = 256                       # :30 / :60
  c.num_epochs = 1000                      # :48 / :78
  # x B/256 (solo/args/pretrain.py:153-154).
  c.learning_rate = 0.3                    # :31 / :61
  c.weight_decay = 1e-4                    # :33 / :63
  c.warmup_epochs = 10.0                   # solo/methods/base.py:293
  c.input_norm = "cifar10_solo"            # solo/data/pretrain_
                                           #   dataloader.py:207 (its std)
  # solo-learn's LARS (solo/utils/lars.py; optim.lars_solo): eta 0.02, the
  # trust ratio clipped at the lr, BN and biases (ndim 1) get plain g.
  c.optimizer = "lars_solo"                # :29 / :59
  c.lars_clip_lr = True                    # :35 / :65
  c.lars_eta = 0.02                        # :36 / :66
  c.lars_adapt_mask = "exclude_bn_bias"    # :37 / :67 exclude_bias_n_norm
  # nn.Linear with bias everywhere (solo/methods/barlow_twins.py:51-59,
  # solo/methods/vicreg.py:53-61); :19-20 / :18-19.
  c.head = projector(hidden_dim=2048, output_dim=2048, hidden_bias=True,
                     output_bias=True)
