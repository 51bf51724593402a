"""Configs of the supervised jobs on a pretrained encoder: linear evaluation
and finetuning. Variant names: DATASET[_moco][_Npct], e.g. `imagenet_moco`
(MoCo's linear protocol) or `imagenet_1pct` (finetune on 1% of the labels).
"""

import ml_collections

from contrastive_jax.config_defaults import base_config

# Per dataset: data, the architecture used for `pretrained=random`, the
# augmentation of the training images and of the test images.
_DATASETS = {
    "cifar10": dict(
        dataset="cifar10", train_split="train", eval_split="test",
        num_classes=10, image_size=32, model="resnet18", cifar_stem=True,
        width_multiplier=1,
        view_augment="random_resized_crop(32)|flip_lr(p=0.5)",
        eval_augment="resize(32)", batch_size=512, eval_batch_size=1000),
    "imagenet": dict(
        dataset="imagenet2012", train_split="train", eval_split="validation",
        num_classes=1000, image_size=224, model="resnet50", cifar_stem=False,
        width_multiplier=1,
        view_augment="random_resized_crop(224)|flip_lr(p=0.5)",
        eval_augment="center_crop(224, crop_fraction=0.875)",
        batch_size=4096, eval_batch_size=1024),
    "digits": dict(
        dataset="digits", train_split="train", eval_split="test",
        num_classes=10, image_size=16, model="tiny_resnet", cifar_stem=True,
        width_multiplier=2,
        view_augment="random_resized_crop(16, area=(0.5, 1.0))",
        eval_augment="resize(16)", batch_size=256, eval_batch_size=512),
}


def _linear_protocol(c, protocol: str):
  if protocol == "moco":
    # MoCo v1 paper section 4.1: SGD lr 30, no weight decay, 100 epochs,
    # x0.1 at 60 and 80, batch 256.
    c.optimizer, c.learning_rate, c.lr_scaling = "sgd", 30.0, "none"
    c.nesterov = False
    c.num_epochs, c.lr_schedule, c.lr_decay_epochs = 100, "step", (60, 80)
    # lr 30 was chosen for MoCo's raw (unnormalised) features.
    c.feature_bn = False
  else:
    # SimCLR appendix B.6: Nesterov momentum, lr 0.1*B/256, no weight
    # decay, 90 epochs, cosine decay.
    c.optimizer, c.learning_rate, c.lr_scaling = "sgd", 0.1, "linear"
    c.nesterov = True
    c.num_epochs, c.lr_schedule = 90, "cosine"


def _finetune_recipe(c, percent: int):
  # SimCLR's semi-supervised fine-tuning command (google-research/simclr
  # README, "Semi-supervised learning and fine-tuning the whole network"):
  # --optimizer=lars --learning_rate=0.005 --learning_rate_scaling=sqrt
  # --weight_decay=0 --train_batch_size=1024 --warmup_epochs=0
  # --global_bn=True --zero_init_logits_layer=True --ft_proj_selector=1
  # (the middle of the 3-layer v2 head), --train_epochs=60 for 1%; 30 for
  # 10% and 100% as SimCLRv2's appendix. Its LARS has no Nesterov
  # (lars_optimizer.py: use_nesterov=False, not set by model_util.py).
  c.optimizer, c.learning_rate, c.lr_scaling = "lars", 0.005, "sqrt"
  c.nesterov = False
  c.batch_size = 1024
  c.num_epochs = 60 if percent <= 1 else 30
  c.lr_schedule = "cosine"
  # 0: the classifier on h (run.py's default `ft_proj_selector=0`, and the
  # only choice for SimCLR v1 / MoCo v1 checkpoints); 1: on the pretraining
  # head's first layer (Dense -> BN -> ReLU), as the command above for
  # SimCLR v2 checkpoints: set --config.finetune_from_head_layer=1.
  c.finetune_from_head_layer = 0


def classifier_config(method: str, variant: str) -> ml_collections.ConfigDict:
  name, *options = variant.split("_")
  if name not in _DATASETS:
    raise ValueError(f"unknown {method} config variant {variant!r}: start it "
                     f"with one of {', '.join(_DATASETS)}")
  protocol, percent = "simclr", 100
  for option in options:
    if option == "moco":
      protocol = "moco"
    elif option.endswith("pct") and option[:-3].isdigit():
      percent = int(option[:-3])
    else:
      raise ValueError(f"unknown option {option!r} in {method} config variant "
                       f"{variant!r}: use _moco or _<N>pct")
  c = base_config()
  c.method = method
  c.update(_DATASETS[name])
  # A pretraining workdir or checkpoint path, or 'random'.
  c.pretrained = ml_collections.config_dict.placeholder(str)
  c.view_augment_2 = ""
  c.weight_decay = 0.0
  c.momentum = 0.9
  c.warmup_epochs = 0.0
  c.online_probe = False
  c.knn.every_steps = 0
  # Standardise features (BatchNorm without scale/shift) before the linear
  # layer: still a linear classifier, but SGD no longer depends on each
  # encoder's feature scale. Neither paper's protocol has it (off); the
  # digits demo keeps it (below).
  c.feature_bn = False
  # The dataset of eval_split when it differs from `dataset` (ImageNet's
  # label subsets are datasets of their own); empty: `dataset`.
  c.eval_dataset = ""
  # Train on a class-balanced `label_percent`% of train_split, the same
  # examples every run (data/label_subset.py); 100: all of it.
  c.label_percent = 100
  c.label_subset_seed = 0
  if percent != 100:
    if name == "imagenet":
      if percent not in (1, 10):
        raise ValueError(f"imagenet label subsets are 1pct and 10pct "
                         f"(SimCLR's lists); got {percent}pct")
      # SimCLR's class-balanced subsets as TFDS ships them (simclr README:
      # `dataset=imagenet2012_subset/1pct`, evaluated on imagenet2012's
      # validation split).
      c.dataset = f"imagenet2012_subset/{percent}pct"
      c.eval_dataset = "imagenet2012"
    else:
      c.label_percent = percent
  if method == "finetune":
    _finetune_recipe(c, percent)
  else:
    _linear_protocol(c, protocol)
    if protocol == "moco":
      c.batch_size = 256
  if name == "digits":
    # The quickstart's linear eval: a tiny encoder's raw features need the
    # standardisation for SGD to clear the random-encoder margin in CI.
    c.feature_bn = True
    c.batch_size = _DATASETS["digits"]["batch_size"]  # 1,438 images
    c.num_epochs = 30
    c.log_every_steps = 10
    c.checkpoint_every_steps = 50
  return c
