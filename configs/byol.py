"""BYOL (Grill et al. 2020) pretraining.

"ref" is google-deepmind/deepmind-research byol/ @4822a45 (docs/recipes.md
cites each number's line); the ImageNet variants are its presets.

Variants (`--config=configs/byol.py:VARIANT`):
  imagenet1000 (default; the reference's default `--pretrain_epochs=1000`)
               ResNet-50, B=4096, 1000 epochs, LARS lr 0.2*B/256 (eta 1e-3,
               momentum 0.9, BN and biases excluded from decay and
               adaptation), wd 1.5e-6, 10 warmup epochs + cosine, target EMA
               0.996 -> 1 (cosine); projector and predictor
               Linear(4096)-BN-ReLU-Linear(256); ImageNet mean/std; the
               asymmetric views (view 1: blur always, no solarize; view 2:
               blur 0.1, solarize 0.2). Paper: 74.3% linear top-1.
  imagenet     the reference's 300-epoch preset: lr 0.3*B/256, wd 1e-6,
               EMA 0.99 -> 1; everything else as imagenet1000.
  multicrop    imagenet1000 plus 6 views of 96 px (solo-learn's: torchvision's
               antialiased bicubic crop 0.08-1 and jitter, no blur or
               solarize) through the online network only, every prediction
               regressed onto the target projections of the two large
               views: solo-learn's multi-crop BYOL (its ImageNet-100
               recipe's views; its other numbers are not taken).
  cifar10      solo-learn's CIFAR-10 BYOL recipe (vturrisi/solo-learn
               scripts/pretrain/cifar/byol.yaml @9187ea3): ResNet-18 with
               CIFAR stem, B=256, 1000 epochs, lr 1.0*B/256, wd 1e-5, EMA
               0.99 -> 1, no blur, solarize 0 / 0.2, torchvision's colour
               jitter, CIFAR-10 mean/std; on OUR LARS (eta 1e-3, no
               lr clipping): solo-learn's eta 0.02 with `clip_lr` is not
               expressible here, so its 92.58% is not claimed.
  digits       offline demo on scikit-learn's handwritten digits: a tiny
               ResNet that trains in about a minute on 2 CPU cores (B=256,
               30 epochs, LARS lr 4.0*B/256, EMA 0.96 -> 1, head and
               predictor hidden width 64, output 32).
  digits_multicrop  digits plus 4 views of 8 px (crop 0.14-0.5, no blur or
               solarize) through the online network only, as `multicrop`:
               multi-crop end to end on 2 CPU cores (78.27% linear top-1
               vs 62.67% for a random encoder, 2026-12-01; the two-view
               digits demo reaches ~80%).
"""

from contrastive_jax.config.defaults import (base_config,
                                             use_pretraining_dataset,
                                             use_small_data, variant_of)

VARIANTS = ("imagenet1000", "imagenet", "multicrop", "cifar10", "small",
            "digits", "digits_multicrop")

# Per epoch count, as the reference's presets (ref configs/byol.py:21-23):
# (base lr, weight decay, base EMA).
_PRESETS = {300: (0.3, 1e-6, 0.99), 1000: (0.2, 1.5e-6, 0.996)}


def byol_views(image_size: int, *, crop_area=(0.08, 1.0),
               jitter_impl: str = "simclr_v1", blur=(1.0, 0.1),
               solarize=(0.0, 0.2), crop_attempts: int = 1
               ) -> tuple[str, str]:
  """BYOL's two asymmetric views (ref utils/augmentations.py:27-66), in the
  reference's order (:88-98): crop, flip, colour jitter 0.4/0.4/0.2/0.1
  with p=0.8, grayscale 0.2, blur (sigma 0.1-2 per image, kernel a tenth
  of the side, zero-padded: 'SAME', augmentations.py:133-169, :422-431)
  with p = blur[v], solarize (threshold 0.5) with p = solarize[v].

  The crop is the reference's sampler (ref utils/dataset.py:204-231: area
  uniform, log-uniform aspect 3/4-4/3, one draw) as torchvision's with
  `crop_attempts` attempts; bicubic resize (:199).
  `jitter_impl='simclr_v1'` is the reference's jitter: an added brightness
  delta, per-channel contrast, HSV saturation (augmentations.py:239-282),
  as SimCLR v1's.
  """
  crop = (f"random_resized_crop({image_size}, area={tuple(crop_area)}, "
          f"impl='torchvision', max_attempts={crop_attempts})")
  views = []
  for blur_p, solarize_p in zip(blur, solarize):
    views.append("|".join([
        crop, "flip_lr(p=0.5)",
        "color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
        f"saturation=0.2, hue=0.1, impl='{jitter_impl}')",
        "grayscale(p=0.2)",
        f"gaussian_blur(p={blur_p}, sigma=(0.1, 2.0), kernel_fraction=0.1, "
        "padding='zeros')",
        f"solarize(p={solarize_p}, threshold=0.5)"]))
  return views[0], views[1]


def solo_learn_small_view(image_size: int) -> str:
  """A small view of solo-learn's multi-crop BYOL (scripts/pretrain/
  imagenet-100-multicrop/augmentations/asymmetric.yaml:47-68 @9187ea3) in
  its order (solo/data/pretrain_dataloader.py:218-263): torchvision's
  RandomResizedCrop 0.08-1, bicubic (:220-225) on a PIL image, which
  antialiases; torchvision's ColorJitter 0.4/0.4/0.2/0.1 with p=0.8;
  grayscale 0.2; no blur, solarize or equalization; flip 0.5."""
  return "|".join([
      f"random_resized_crop({image_size}, area=(0.08, 1.0), "
      "impl='torchvision', method='bicubic', antialias=True)",
      "color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
      "saturation=0.2, hue=0.1, impl='torchvision')",
      "grayscale(p=0.2)", "flip_lr(p=0.5)"])


def get_config(arg: str | None = None):
  variant = variant_of("byol", arg, VARIANTS, default="imagenet1000")
  c = base_config()
  c.method = "byol"
  # Projector g and predictor q: Linear(4096) -> BN -> ReLU -> Linear(256)
  # (ref configs/byol.py:40-42, utils/networks.py:40-45): no BN on the
  # output, no output bias.
  c.head.num_layers = 2
  c.head.hidden_dim = 4096
  c.head.output_dim = 256
  c.head.use_bn = True
  c.head.output_bn = False
  c.head.output_bias = False
  c.predictor_hidden_dim = 4096
  # Target = EMA of the online encoder and projector, tau from the base up to
  # 1 along a cosine (ref utils/schedules.py:20-24).
  c.ema_momentum_schedule = "cosine"
  # LARS, eta 1e-3, momentum 0.9 (ref configs/byol.py:57-61), BN and biases
  # excluded from decay and adaptation (ref byol_experiment.py:190-195);
  # lr * B / 256 (ref utils/schedules.py:34); 10 warmup epochs then cosine
  # to 0 (ref configs/byol.py:64, utils/schedules.py:35-43).
  c.optimizer, c.momentum = "lars", 0.9
  c.lr_scaling, c.lr_schedule = "linear", "cosine"
  c.warmup_epochs = 10.0
  c.weight_decay_mask = "exclude_bn_bias"
  # Haiku's ResNet-50 v1 as the reference builds it: zero-initialised last
  # BN gamma of each block (ref README.md "Note on batch normalization"),
  # fan-in truncated-normal convolutions.
  c.conv_init, c.zero_init_residual = "simclr", True
  if variant.startswith("imagenet") or variant == "multicrop":
    epochs = 300 if variant == "imagenet" else 1000
    use_pretraining_dataset(c, "imagenet")
    c.batch_size = 4096                    # ref main_loop.py:37
    c.num_epochs = epochs
    c.learning_rate, c.weight_decay, c.ema_momentum = _PRESETS[epochs]
    c.input_norm = "imagenet"              # ref utils/dataset.py:63-69
    c.view_augment, c.view_augment_2 = byol_views(224)
    if variant == "multicrop":
      # + 6 small views of 96 px (crop 0.08-1, no blur, no solarize), seen
      # by the online network only: solo-learn's multi-crop BYOL (scripts/
      # pretrain/imagenet-100-multicrop/augmentations/asymmetric.yaml:47-68
      # @9187ea3; the pairing solo/methods/byol.py:186-190).
      c.extra_views = (solo_learn_small_view(96),) * 6
  elif variant == "cifar10":
    _solo_learn_cifar10(c)
  elif variant == "small":
    # Your own folder (configs/simclr.py:small's data, model and views);
    # BYOL's numbers measured on real MNIST (BENCHMARKS.md "Small data").
    # Half the batch for twice the steps: the same images in the same time
    # on 2 cores, twice the updates (EMA steps included): 88.1% -> 91.5%
    # and 91.8% (seed 1) with the output BN below: +3.1 and +3.4 over the
    # pixels' 88.4%.
    use_small_data(c, batch_size=128)
    c.head.hidden_dim = 256
    c.head.output_dim = 64
    c.predictor_hidden_dim = 256
    # The digits demo's lr 4.0 and EMA 0.96 (lr 1.0 and EMA 0.98 gave 79.0%
    # linear top-1 on MNIST-5k, these 87.4%; wd 1e-4 on top 85.2%, lr 8.0
    # was behind from step 100 on).
    c.learning_rate, c.weight_decay = 4.0, 1.5e-6
    c.ema_momentum = 0.96
    # A BN on the projector's output, as MoCo v3's projector (ref
    # moco-v3 builder.py:104-106): 87.4% -> 88.1% at B 256.
    c.head.output_bn = True
  else:  # digits
    use_pretraining_dataset(c, "digits")   # tiny ResNet x2, 16 px, B=256
    c.head.hidden_dim = 64
    c.predictor_hidden_dim = 64
    # The digits are 8x8 strokes: very small crops erase the digit; the
    # blur is the identity below 20 px anyway.
    c.view_augment, c.view_augment_2 = byol_views(16, crop_area=(0.25, 1.0))
    # A 150-step run: a higher lr and a faster target than ImageNet's
    # (measured: lr 1.0 and EMA 0.99 gave 70.8% linear top-1, these 80.5%).
    c.num_epochs = 30
    c.learning_rate, c.weight_decay, c.ema_momentum = 4.0, 1.5e-6, 0.96
    c.warmup_epochs = 2.0
    if variant == "digits_multicrop":
      # Small crops of the 8x8 strokes: half the side, a quarter of the
      # area at most, as ImageNet's 96-of-224 px views.
      c.extra_views = (byol_views(8, crop_area=(0.14, 0.5), blur=(0.0, 0.0),
                                  solarize=(0.0, 0.0))[0],) * 4
  return c


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  byol.yaml, "aug" scripts/pretrain/cifar/augmentations/asymmetric.yaml."""
  use_pretraining_dataset(c, "cifar10")    # ResNet-18, CIFAR stem, 32 px
  c.batch_size = 256                       # yaml:33
  c.num_epochs = 1000                      # yaml:51
  c.learning_rate = 1.0                    # yaml:34, x B/256 (solo/args/
  c.weight_decay = 1e-5                    # yaml:36   pretrain.py:153-154)
  c.ema_momentum = 0.99                    # yaml:22-24 (to 1.0)
  c.warmup_epochs = 10.0                   # solo/methods/base.py:293
  # solo-learn's LARS (solo/utils/lars.py; optim.lars_solo): eta 0.02, the
  # trust ratio clipped at the lr, BN and biases (ndim 1) get plain g.
  c.optimizer = "lars_solo"                # yaml:32
  c.lars_clip_lr = True                    # yaml:38
  c.lars_eta = 0.02                        # yaml:39
  c.lars_adapt_mask = "exclude_bn_bias"    # yaml:40 exclude_bias_n_norm
  # torchvision's resnet18 with its defaults (solo/backbones/resnet/
  # __init__.py:24-25, resnet.py:20): kaiming normal fan_out convs,
  # zero_init_residual=False.
  c.conv_init, c.zero_init_residual = "torchvision", False
  c.input_norm = "cifar10_solo"            # solo/data/pretrain_
                                           #   dataloader.py:207
  # aug: crop 0.08-1 (torchvision's RandomResizedCrop, 10 attempts,
  # bicubic), jitter 0.4/0.4/0.2/0.1 p=0.8 (torchvision's ColorJitter),
  # grayscale 0.2, no blur, solarize 0 / 0.2, flip 0.5.
  c.view_augment, c.view_augment_2 = byol_views(
      32, jitter_impl="torchvision", blur=(0.0, 0.0), solarize=(0.0, 0.2),
      crop_attempts=10)
