"""DINO (Caron et al. 2021) pretraining, ViT or ResNet.

"ref" is facebookresearch/dino @7c446df (the README table cites each
number's line): main_dino.py's defaults and the README's commands.

Variants (`--config=configs/dino.py:VARIANT`):
  vit_small (default) the README's ViT-S/16 "full command" (README.md:197:
           300 epochs, teacher temperature 0.04 -> 0.07 over 30 epochs,
           norm_last_layer false) on 2 nodes x 8 GPUs x 64 (B=1024), with
           10 local crops (the paper's best run; the code's default is 8,
           main_dino.py:112); everything else main_dino.py's defaults:
           AdamW lr 5e-4*B/256, 10 warmup epochs, cosine to 1e-6, wd 0.04 ->
           0.4 (cosine), gradients clipped per parameter at 3.0, last layer
           frozen for 1 epoch, drop-path 0.1, teacher EMA 0.996 -> 1
           (cosine), head 3 layers 2048 -> 256 -> 65,536. The released
           ViT-S/16 reaches 77.0% linear, 74.5% kNN (README.md:26-27; its
           own args.txt is not stored here): not reproduced.
  r50      the README's ResNet-50 command (README.md:207): SGD lr 0.03*B/256
           (momentum 0.9), wd 1e-4 constant, global crops (0.14, 1), local
           crops (0.05, 0.14) (8, the code's default), 8 GPUs x 64 (B=512),
           100 epochs; teacher temperature 0.04. The released ResNet-50
           reaches 75.3% linear (README.md:75): not reproduced.
  cifar10  solo-learn's CIFAR-10 DINO (vturrisi/solo-learn scripts/
           pretrain/cifar/dino.yaml @9187ea3): ResNet-18, 2 crops, 4096
           prototypes, LARS (solo-learn's: eta 0.02, clipped) lr 0.3*B/256,
           wd 1e-6, B=256, 1000 epochs, EMA 0.9995 -> 1, teacher 0.07. solo-
           learn reports 89.52% (its README.md:222): not reproduced.
  small    your own folder (configs/simclr.py:small's data, model and views;
           no local crops), a small head with BatchNorm (DINO's
           --use_bn_in_head), AdamW lr 3e-3*B/256, EMA 0.99: 71.8% linear
           top-1 on real MNIST-5k, 16.6 points under the pixels' 88.4%
           (BENCHMARKS.md "Small data"): the slowest learner of the eight in
           that budget.
  digits   offline demo on scikit-learn's handwritten digits: the tiny
           ResNet, 2 global crops of 16 px and 4 local crops of 8 px, the
           same small head and optimizer (BENCHMARKS.md "The digits, DINO").
"""

import ml_collections

from contrastive_jax.config.defaults import (base_config,
                                             use_pretraining_dataset,
                                             use_small_data, variant_of)

VARIANTS = ("vit_small", "r50", "cifar10", "small", "digits")


def dino_view(size: int, area, *, blur: float, solarize: float = 0.0,
              jitter_impl: str = "torchvision") -> str:
  """One crop of `DataAugmentationDINO` (ref main_dino.py:414-446), in its
  order: torchvision's RandomResizedCrop (bicubic, PIL: antialiased), flip
  0.5, colour jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2, PIL's
  Gaussian blur (radius 0.1-2, utils.py:36-54) with p = `blur`, solarize
  (threshold 128, utils.py:57-68) with p = `solarize`. Ops with p = 0 are
  left out, as the reference leaves them out."""
  ops = [f"random_resized_crop({size}, area={tuple(area)}, "
         "impl='torchvision', method='bicubic', antialias=True)",
         "flip_lr(p=0.5)",
         "color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
         f"saturation=0.2, hue=0.1, impl='{jitter_impl}')",
         "grayscale(p=0.2)"]
  if blur:
    ops.append(f"gaussian_blur(p={blur}, sigma=(0.1, 2.0), "
               "kernel_fraction=0.1)")
  if solarize:
    ops.append(f"solarize(p={solarize}, threshold=0.5)")
  return "|".join(ops)


def dino_views(global_size: int, local_size: int, *, global_area,
               local_area, num_local: int):
  """(view 1, view 2, local views): global crop 1 blurred always, global
  crop 2 blurred with p 0.1 and solarized with p 0.2, each local crop
  blurred with p 0.5 (ref main_dino.py:423-442)."""
  return (dino_view(global_size, global_area, blur=1.0),
          dino_view(global_size, global_area, blur=0.1, solarize=0.2),
          (dino_view(local_size, local_area, blur=0.5),) * num_local)


def head(*, output_dim: int, hidden_dim: int = 2048,
         bottleneck_dim: int = 256, norm_last_layer: bool = True,
         use_bn: bool = False) -> ml_collections.ConfigDict:
  """DINOHead's fields (ref vision_transformer.py:257-291): 3 layers,
  hidden 2048, bottleneck 256 (:258), out_dim 65,536 (main_dino.py:55),
  no BN (:64), norm_last_layer (:57)."""
  return ml_collections.ConfigDict(dict(
      num_layers=3, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
      output_dim=output_dim, use_bn=use_bn,
      norm_last_layer=norm_last_layer))


def get_config(arg: str | None = None):
  variant = variant_of("dino", arg, VARIANTS, "vit_small")
  c = base_config()
  c.method = "dino"
  c.head = head(output_dim=65536)
  # DINOLoss's defaults (main_dino.py:364-366) and the teacher temperature
  # flags (:68-76): 0.04 throughout unless a command warms it up.
  c.student_temperature = 0.1
  c.center_momentum = 0.9
  c.warmup_teacher_temperature = 0.04
  c.teacher_temperature = 0.04
  c.warmup_teacher_temperature_epochs = 0
  # Teacher = EMA of the student, m from 0.996 up to 1 on a cosine per step
  # (main_dino.py:61, :247-248, :331-335).
  c.ema_momentum, c.ema_momentum_schedule = 0.996, "cosine"
  # AdamW (main_dino.py:103, :226-227; torch's betas and eps = optax's);
  # lr 5e-4 * B / 256 (:96, :239-240), 10 linear warmup epochs (:99), then
  # a cosine to min_lr 1e-6 (:101; utils.py:187-198).
  c.optimizer, c.momentum = "adamw", 0.9
  c.learning_rate, c.lr_scaling, c.lr_schedule = 5e-4, "linear", "cosine"
  c.warmup_epochs = 10.0
  c.min_learning_rate = 1e-6
  # Weight decay 0.04 -> 0.4 on a cosine (main_dino.py:82-86, :245-249),
  # on every parameter but biases and 1-D ones (utils.py:632-643: the
  # method's `no_decay` on top of 'all').
  c.weight_decay, c.weight_decay_end = 0.04, 0.4
  c.weight_decay_mask = "all"
  c.clip_grad = 3.0                        # main_dino.py:87
  c.freeze_last_layer = 1.0                # main_dino.py:93 (epochs)
  c.drop_path_rate = 0.0                   # ResNets; ViTs below
  c.input_norm = "imagenet"                # main_dino.py:421
  if variant == "vit_small":
    use_pretraining_dataset(c, "imagenet")
    c.model, c.patch_size = "vit_small", 16   # main_dino.py:45, :50
    # DINO's (timm's) ViT-S: 6 heads (vision_transformer.py:243-247
    # `vit_small`: embed_dim 384, depth 12, num_heads 6); ours has MoCo
    # v3's 12 by default. DINO's learned positions for 224 px, resized
    # bicubically for the 96 px crops (vision_transformer.py:147, :161,
    # :174-194), and its init (:161-172).
    c.vit_num_heads = 6
    c.vit_position_embedding, c.vit_init = "learned", "dino"
    c.batch_size = 1024                    # 64 (main_dino.py:90) x 16 GPUs
                                           #   (run_with_submitit.py:29-30)
    c.num_epochs = 300                     # README.md:197
    c.teacher_temperature = 0.07           # README.md:197
    c.warmup_teacher_temperature_epochs = 30
    c.head.norm_last_layer = False         # README.md:197
    c.drop_path_rate = 0.1                 # main_dino.py:105
    c.view_augment, c.view_augment_2, c.extra_views = dino_views(
        224, 96, global_area=(0.4, 1.0),   # main_dino.py:108-110
        local_area=(0.05, 0.4),            # :115-117
        num_local=10)                      # the paper; the code's 8 (:112)
  elif variant == "r50":
    use_pretraining_dataset(c, "imagenet")  # ResNet-50
    c.batch_size = 512                     # 64 x 8 (README.md:207)
    c.num_epochs = 100                     # main_dino.py:92
    # torchvision's resnet50() (main_dino.py:178-180): kaiming normal
    # fan_out, no zero-gamma.
    c.conv_init, c.zero_init_residual = "torchvision", False
    c.optimizer, c.momentum = "sgd", 0.9   # README.md:207; main_dino.py:229
    c.learning_rate = 0.03                 # README.md:207
    c.weight_decay, c.weight_decay_end = 1e-4, 1e-4
    c.view_augment, c.view_augment_2, c.extra_views = dino_views(
        224, 96, global_area=(0.14, 1.0), local_area=(0.05, 0.14),
        num_local=8)                       # README.md:207; main_dino.py:112
  elif variant == "cifar10":
    _solo_learn_cifar10(c)
  else:
    if variant == "small":
      # Your own folder (configs/simclr.py:small's data, model and views).
      use_small_data(c)
    else:
      use_pretraining_dataset(c, "digits")  # tiny ResNet x2, 16 px, B=256
      # The digits are 8x8 strokes: global crops of a quarter of the area
      # and more, local ones of half the side (96 of 224 px); blur is the
      # identity at this size.
      c.view_augment, c.view_augment_2, c.extra_views = dino_views(
          16, 8, global_area=(0.25, 1.0), local_area=(0.14, 0.5),
          num_local=4)
      c.num_epochs = 30
      c.warmup_epochs = 2.0
    _small_recipe(c)
  return c


def _small_recipe(c):
  """`:small`'s and the digits demo's numbers: DINO's AdamW with its weight
  decay cosine 0.04 -> 0.4 and clipping, a small head with BatchNorm after
  its hidden layers, lr 3e-3*B/256, EMA 0.99 -> 1, teacher temperature 0.04.

  Measured on real MNIST-5k (BENCHMARKS.md "Small data", 2026-12-06):
  without BN in the head every setting tried (this head at lr 1e-3 and EMA
  0.96; solo-learn's CIFAR-10 LARS and head 2048 -> 256 -> 4096; a head 512
  -> 128 -> 1024) went to the uniform output within 40 steps (the loss at
  ln K, 53.0% linear at the end): a small ResNet's features share a large
  common component, which the centre removes, so the teacher's target is
  uniform. BN in the head's MLP (main_dino.py:64-65 --use_bn_in_head,
  vision_transformer.py:265-271: BatchNorm1d after each hidden Linear)
  normalises it away: 66.2% at lr 1e-3, 71.8% at lr 3e-3; the wider head
  gave 71.4%."""
  c.head = head(output_dim=256, hidden_dim=64, bottleneck_dim=32,
                use_bn=True)
  c.input_norm = "none"
  c.learning_rate = 3e-3
  c.min_learning_rate = 0.0
  c.ema_momentum = 0.99
  # The reference's default teacher temperature, 0.04 throughout: 0.07
  # (warmed up over 5 epochs) collapsed the first digits demo to the
  # uniform output (loss ln 256) by step 70, 2026-12-06.
  c.teacher_temperature = 0.04


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  dino.yaml, "aug" scripts/pretrain/cifar/augmentations/asymmetric.yaml,
  "solo" the package (solo/methods/dino.py's defaults)."""
  use_pretraining_dataset(c, "cifar10")    # ResNet-18 (yaml:17), CIFAR
                                           #   stem, 32 px
  c.head = head(output_dim=4096,           # yaml:21 num_prototypes
                hidden_dim=2048,           # yaml:19
                bottleneck_dim=256,        # yaml:20
                norm_last_layer=True,      # solo dino.py:204-206
                use_bn=False)              # solo dino.py:207-209
  c.teacher_temperature = 0.07             # solo dino.py:215-217
  c.warmup_teacher_temperature = 0.04      # :218-220, over 0 epochs
  c.warmup_teacher_temperature_epochs = 0  #   (:221-223)
  c.clip_grad = 0.0                        # solo dino.py:198
  c.freeze_last_layer = 1.0                # solo dino.py:199-201
  c.ema_momentum = 0.9995                  # yaml:22-24 (to 1.0)
  c.batch_size = 256                       # yaml:33
  c.num_epochs = 1000                      # yaml:51
  c.learning_rate = 0.3                    # yaml:34, x B/256 (solo/args/
                                           #   pretrain.py:151-154)
  c.probe_learning_rate = 0.1              # yaml:35 classifier_lr
  c.weight_decay = 1e-6                    # yaml:36
  c.weight_decay_end = -1.0                # constant
  c.warmup_epochs = 10.0                   # solo/methods/base.py:293
  c.min_learning_rate = 0.0                # solo/methods/base.py:291
  # solo-learn's LARS (solo/utils/lars.py; optim.lars_solo): eta 0.02, the
  # trust ratio clipped at the lr, BN and biases (ndim 1) get plain g.
  c.optimizer, c.momentum = "lars_solo", 0.9   # yaml:32
  c.lars_clip_lr = True                    # yaml:38
  c.lars_eta = 0.02                        # yaml:39
  c.lars_adapt_mask = "exclude_bn_bias"    # yaml:40 exclude_bias_n_norm
  c.weight_decay_mask = "exclude_bn_bias"
  # torchvision's resnet18 with its defaults (solo/backbones/resnet/
  # __init__.py:24-25): zero_init_residual=False; solo-learn's CIFAR-10
  # mean and std (solo/data/pretrain_dataloader.py:207).
  c.conv_init, c.zero_init_residual = "torchvision", False
  c.input_norm = "cifar10_solo"
  # aug: 2 crops 0.08-1, jitter 0.4/0.4/0.2/0.1 p 0.8, grayscale 0.2, no
  # blur, solarize 0 / 0.2, flip 0.5 (aug:1-45); no local crops.
  c.view_augment = dino_view(32, (0.08, 1.0), blur=0.0)
  c.view_augment_2 = dino_view(32, (0.08, 1.0), blur=0.0, solarize=0.2)
