"""Configs of the supervised jobs on a pretrained encoder: linear evaluation
and finetuning. Variant names:
DATASET[_moco|_mocov3[_vit]|_simsiam|_byol][_Npct], e.g. `imagenet_moco`
(MoCo v1/v2's linear protocol), `imagenet_mocov3_vit` (MoCo v3's, for a
ViT), `imagenet_simsiam`, `imagenet_byol` or `imagenet_1pct` (finetune on
1% of the labels).
"""

import ml_collections

from contrastive_jax.config import lib
from contrastive_jax.config.defaults import DATASETS, base_config
from contrastive_jax.config.views import moco_crop, simclr_crop
from contrastive_jax.errors import ConfigError

# `pretrained` values that stand in for a pretraining run: a random encoder
# of this config's architecture, and the eval view's pixels.
RANDOM = "random"
PIXELS = "pixels"
BASELINES = (RANDOM, PIXELS)

# The digits demo's training view (the others take their protocol's,
# `_views`).
_DIGITS_VIEW = "random_resized_crop(16, area=(0.5, 1.0))"


def _views(c, name: str, protocol: str):
  """The training view of each protocol: its crop + flip, no colour. The
  digits demo keeps its own (`_DIGITS_VIEW`)."""
  if name == "digits":
    c.view_augment = _DIGITS_VIEW
    return
  if name == "small":
    # A plain linear probe on fixed features (logistic regression, as an
    # independent scikit-learn probe runs it): no augmentation, the fairest
    # protocol for the pixels baseline, which crops would only hurt.
    c.view_augment = c.eval_augment
    return
  if protocol == "byol":
    # deepmind-research byol utils/dataset.py @4822a45: the pretraining
    # crop (area 0.08-1, log-uniform aspect 3/4-4/3, one draw, :204-231) +
    # flip (:190-192), bicubic resize (:199); testing: the central
    # 224/(224 + 32) = 0.875 of the shorter side (:253-263), bicubic (:199):
    # base_config's eval_augment.
    c.view_augment = (f"random_resized_crop({c.image_size}, area=(0.08, "
                      "1.0), impl='torchvision', max_attempts=1)"
                      "|flip_lr(p=0.5)")
  elif protocol in ("moco", "mocov3", "simsiam"):
    # SimSiam's are MoCo's (simsiam main_lincls.py:264-271, :282-288
    # @a7bc177). MoCo v3's are v1/v2's (moco-v3 main_lincls.py:272-274, :289-292
    # @c349e6e). main_lincls.py:251-252 @90e244a: RandomResizedCrop(224) (torchvision's
    # scale 0.08-1) + RandomHorizontalFlip.
    c.view_augment = f"{moco_crop(c.image_size)}|flip_lr(p=0.5)"
    if name == "imagenet":
      # main_lincls.py:268-269 @90e244a: Resize(256) + CenterCrop(224) is
      # the central 224/256 = 0.875 of the shorter side, resized by PIL's
      # bilinear filter (antialiased).
      c.eval_augment = ("center_crop(224, crop_fraction=0.875, "
                        "method='bilinear', antialias=True)")
  else:
    # SimCLR HEAD data.py:164 `color_distort=is_pretrain`:
    # preprocess_for_train (data_util.py:447-477) is the pretraining crop
    # (crop_and_resize, :304-325) + flip, without colour.
    c.view_augment = f"{simclr_crop(c.image_size)}|flip_lr(p=0.5)"


def _linear_protocol(c, name: str, protocol: str, vit: bool = False):
  if protocol == "simsiam":
    # facebookresearch/simsiam main_lincls.py @a7bc177 with --lars (its
    # README.md:43-51): apex's LARC(SGD, trust_coefficient=.001, clip=False)
    # (:226-232) on fc weight AND bias (:155-158, :223-224), which is
    # solo-learn's LARS adapting every leaf ('lars_solo', solo_lars.py);
    # lr 0.1 * B / 256 (:53-54, :188), momentum 0.9 (:55-56), no weight
    # decay (:57-59), batch 4096 (:48-52), 90 epochs (:44-45), cosine per
    # epoch without warmup (:491-495; ours per step); fc N(0, 0.01^2), bias
    # 0 (:160-161).
    c.optimizer, c.learning_rate, c.lr_scaling = "lars_solo", 0.1, "linear"
    c.lars_eta, c.lars_clip_lr, c.lars_adapt_mask = 1e-3, False, "all"
    c.nesterov = False
    c.num_epochs, c.lr_schedule, c.batch_size = 90, "cosine", 4096
    c.feature_bn = False
    c.classifier_init_stddev = 0.01
  elif protocol == "byol":
    # deepmind-research byol @4822a45: optax.sgd (eval_experiment.py:
    # 299-301: no weight decay) with momentum 0.9, Nesterov (configs/eval.py:
    # 38-41); lr 0.2 * B / 256 (configs/eval.py:42-45, utils/schedules.py:
    # 34), no warmup, cosine to 0 (configs/eval.py:44, schedules.py:39-43);
    # 80 epochs (configs/eval.py:29); batch 4096 (main_loop.py:37, the one
    # --batch_size). Its classifier is hk.Linear's default init
    # (eval_experiment.py:151: truncated normal, std 1/sqrt(fan_in)); ours
    # starts at zero (docs/recipes.md "BYOL: deviations").
    c.optimizer, c.learning_rate, c.lr_scaling = "sgd", 0.2, "linear"
    c.nesterov = True
    c.num_epochs, c.lr_schedule, c.batch_size = 80, "cosine", 4096
    c.feature_bn = False
  elif protocol == "mocov3":
    # facebookresearch/moco-v3 main_lincls.py @c349e6e: SGD (:236-238) lr
    # 0.1 * B / 256 (:58-59, :196), momentum 0.9 (:60), no weight decay
    # (:62), batch 1024 (:53), 90 epochs (:49), cosine per epoch
    # (:499-503); fc N(0, 0.01^2), bias 0 (:168-169). The ViT commands
    # pass --lr=3 (CONFIG.md:143-149, :173-179).
    c.optimizer, c.learning_rate, c.lr_scaling = "sgd", 0.1, "linear"
    if vit:
      c.learning_rate = 3.0
    c.nesterov = False
    c.num_epochs, c.lr_schedule = 90, "cosine"
    c.batch_size = 1024
    c.feature_bn = False
    c.classifier_init_stddev = 0.01
  elif protocol == "moco":
    # MoCo's main_lincls.py defaults @90e244a (MoCo v1 paper section 4.1):
    # SGD lr 30 (:47-48), momentum 0.9 (:51-52), no weight decay (:53-55),
    # 100 epochs (:38-39), x0.1 at 60 and 80 (:49-50), batch 256 (:42-46).
    c.optimizer, c.learning_rate, c.lr_scaling = "sgd", 30.0, "none"
    c.nesterov = False
    c.num_epochs, c.lr_schedule, c.lr_decay_epochs = 100, "step", (60, 80)
    # lr 30 was chosen for MoCo's raw (unnormalised) features.
    c.feature_bn = False
    # main_lincls.py:152-153 @90e244a: fc weight N(0, 0.01^2), bias zero.
    c.classifier_init_stddev = 0.01
  else:
    # SimCLR's linear-eval commands (HEAD README.md:115-123 CIFAR-10,
    # :135-144 ImageNet): momentum optimizer, which is Nesterov
    # (model_util.py:88-90), lr 0.1*B/256, no warmup, cosine decay,
    # --zero_init_logits_layer=True. Epochs: 100 for CIFAR-10 (:120), 90
    # for ImageNet (:140). Weight decay: 1e-6 in the ImageNet command
    # (:139), 0 in CIFAR-10's; the v1 paper (appendix B.5, followed by B.6)
    # says no regularisation: we follow the code.
    c.optimizer, c.learning_rate, c.lr_scaling = "sgd", 0.1, "linear"
    c.nesterov = True
    c.num_epochs = 100 if name == "cifar10" else 90
    c.lr_schedule = "cosine"
    c.weight_decay = 1e-6 if name == "imagenet" else 0.0
  # Decay every trained parameter, the bias included: SimCLR's momentum
  # path adds an L2 loss on every non-BN trainable variable (HEAD
  # model_util.py:46-50), MoCo's torch SGD decays fc weight and bias.
  c.weight_decay_mask = "all"


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
  if name not in DATASETS:
    raise ValueError(f"unknown {method} config variant {variant!r}: start it "
                     f"with one of {', '.join(DATASETS)}")
  protocol, percent, vit = "simclr", 100, False
  for option in options:
    if (option in ("moco", "mocov3", "vit", "simsiam", "byol")
        and method == "finetune"):
      raise ValueError(f"unknown option {option!r} in finetune config "
                       f"variant {variant!r}: finetuning has one recipe, "
                       "SimCLR's semi-supervised command; use _<N>pct")
    if option in ("moco", "mocov3", "simsiam", "byol"):
      protocol = option
    elif option == "vit":
      vit = True
    elif option.endswith("pct") and option[:-3].isdigit():
      percent = int(option[:-3])
    else:
      raise ValueError(f"unknown option {option!r} in {method} config variant "
                       f"{variant!r}: use _moco, _mocov3[_vit], _simsiam, "
                       "_byol or _<N>pct")
  if vit and protocol != "mocov3":
    raise ValueError(f"option 'vit' in {method} config variant {variant!r} "
                     "is MoCo v3's ViT protocol: use _mocov3_vit")
  c = base_config()
  c.method = method
  c.update(DATASETS[name])
  # A pretraining workdir or checkpoint path, 'random' or 'pixels'.
  c.pretrained = ml_collections.config_dict.placeholder(str)
  c.view_augment_2 = ""
  c.weight_decay = 0.0
  c.momentum = 0.9
  c.warmup_epochs = 0.0
  c.online_probe = False
  c.knn.every_steps = 0
  # The final evaluation also scores the features the classifier reads by
  # kNN (`knn`'s k, temperature and train-split bank): eval_results.json's
  # knn_top1, for the encoder and the random and pixels baselines alike.
  c.knn_eval = True
  # The linear layer's kernel init: 0: zeros (SimCLR's
  # --zero_init_logits_layer=True); > 0: N(0, stddev^2). Bias: zero.
  c.classifier_init_stddev = 0.0
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
  _views(c, name, protocol)
  if method == "finetune":
    _finetune_recipe(c, percent)
  else:
    _linear_protocol(c, name, protocol, vit=vit)
    if protocol == "moco":
      c.batch_size = 256
  if name == "small":
    # The small-data recipes' protocol (the quality benchmark's): SimCLR's
    # (SGD, Nesterov, lr 0.1*B/256, cosine, zero-initialised classifier)
    # on standardised features, 30 epochs of a folder's train split.
    c.feature_bn = True
    c.num_epochs = 30
    c.log_every_steps = 20
    c.checkpoint_every_steps = 500
  if name == "digits":
    # The quickstart's linear eval: a tiny encoder's raw features need the
    # standardisation for SGD to clear the random-encoder margin in CI.
    c.feature_bn = True
    c.batch_size = DATASETS["digits"]["batch_size"]  # 1,438 images
    c.num_epochs = 30
    if protocol == "moco":
      # MoCo's decays at 60% and 80% of the run (60, 80 of 100 epochs),
      # at the same fractions of the demo's 30 epochs.
      c.lr_decay_epochs = (18, 24)
    c.log_every_steps = 10
    c.checkpoint_every_steps = 50
  return c


def linear_eval_base() -> ml_collections.ConfigDict:
  """The config linear evaluation's family starts from (LINEAR_EVAL's
  `Method.base_config`: its fields' values for a stored config from before
  they existed)."""
  return classifier_config("linear_eval", "cifar10")


def finetune_base() -> ml_collections.ConfigDict:
  """The config finetuning's family starts from (FINETUNE's
  `Method.base_config`)."""
  return classifier_config("finetune", "cifar10")


def check_num_classes(value, *, dataset_allowed: bool = True):
  """A classifier needs two classes or more; -1 (before the train split
  fits it) takes the split's."""
  ok = (isinstance(value, int) and not isinstance(value, bool)
        and (value >= 2 or (dataset_allowed and value == -1)))
  if not ok:
    allowed = ("must be an integer >= 2, or -1 (the train split's)"
               if dataset_allowed else "must be an integer >= 2")
    raise ConfigError(f"config.num_classes={value!r} is invalid: {allowed}")


def finetunes(config: ml_collections.ConfigDict) -> bool:
  """Whether a classifier config trains its encoder too (finetune) or only
  the classifier on frozen features (linear_eval)."""
  return config.method == "finetune"


def check_config(config: ml_collections.ConfigDict, *, num_devices: int):
  """The classifiers' own fields (Method.validate_config of linear_eval and
  finetune), before anything is built. Fields absent from configs of runs
  from before they existed take their defaults (config_lib.value)."""
  del num_devices
  pretrained = config.get("pretrained")
  if not isinstance(pretrained, str) or not pretrained:
    raise ConfigError("config.pretrained is empty: give a pretraining "
                      "workdir or checkpoint path, 'random' or 'pixels'")
  if pretrained == PIXELS and finetunes(config):
    raise ConfigError("config.pretrained='pixels' has no parameters to "
                      "finetune: evaluate the pixels baseline with "
                      "linear_eval")
  check_num_classes(config.num_classes)
  init_stddev = lib.value(config, "classifier_init_stddev")
  if (isinstance(init_stddev, bool) or
      not isinstance(init_stddev, (int, float)) or init_stddev < 0):
    raise ConfigError(f"config.classifier_init_stddev={init_stddev!r} is "
                      "invalid: must be a number >= 0 (0: zero init)")
  layer = lib.value(config, "finetune_from_head_layer")
  if layer != 0 and (layer != 1 or not finetunes(config)):
    raise ConfigError(f"finetune_from_head_layer must be 0 or 1 (1: finetune "
                      f"only); got {layer!r} for method {config.method!r}")
