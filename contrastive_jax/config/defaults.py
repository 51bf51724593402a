"""The common base every `configs/*.py` file starts from.

Configs are data: one `ml_collections.ConfigDict` of plain values, overridable
from the command line (`--config.batch_size=256`). Method configs import this
module, call `base_config()` and change what their recipe changes.
"""

import copy
import functools
from typing import Any

import ml_collections

# The view builders, where the configs have always imported them from.
from contrastive_jax.config.views import (  # noqa: F401  pylint: disable=unused-import
    moco_crop, moco_views, simclr_crop, simclr_views, small_views)


def variant_of(name: str, arg: str | None, variants, default: str) -> str:
  """The variant `arg` of config file `name` (its `default` when empty); a
  ValueError listing `variants` when it is none of them."""
  variant = arg or default
  if variant not in variants:
    raise ValueError(f"unknown {name} config variant {variant!r}: use "
                     f"{', '.join(variants[:-1])} or {variants[-1]}")
  return variant


# Each dataset as every job on it sees it, pretraining or supervised: the
# data, the architecture (for a pretraining run, and for a classifier's
# `pretrained=random` baseline), the test images' augmentation and the
# batches where they differ from base_config's. Recipes (views, optimiser,
# method fields) stay in the configs.
DATASETS = {
    # Its batches and test crop are base_config's (B 4096, SimCLR's central
    # 0.875 of the shorter side, HEAD data_util.py:29, :225-249): the
    # methods' recipes set their own batch.
    "imagenet": dict(
        dataset="imagenet2012", eval_split="validation", num_classes=1000,
        image_size=224, model="resnet50", cifar_stem=False),
    "cifar10": dict(
        dataset="cifar10", eval_split="test", num_classes=10, image_size=32,
        model="resnet18", cifar_stem=True,
        # The image as it is: SimCLR has no test crop at <= 32 px (HEAD
        # data.py:154-158), MoCo's CIFAR-10 demo none either.
        eval_augment="resize(32)", batch_size=512, eval_batch_size=1000),
    # Offline demo: a tiny encoder, x2 wide (~1 minute on 2 CPU cores).
    "digits": dict(
        dataset="digits", train_split="train", eval_split="test",
        num_classes=10, image_size=16, model="tiny_resnet", cifar_stem=True,
        width_multiplier=2, eval_augment="resize(16)", batch_size=256,
        eval_batch_size=512),
    # Your own small folder (`--config.dataset=folder:PATH`, which it needs):
    # about 1k-100k images of any size, resized to 32 px, on one machine
    # (2 CPU cores to one GPU). The model and size are the `:small`
    # recipes' (BENCHMARKS.md, "Small data"). Labelled folders are
    # evaluated on their 'test' split.
    "small": dict(
        dataset="", train_split="train", eval_split="test", num_classes=-1,
        image_size=32, model="small_resnet", cifar_stem=True,
        width_multiplier=1, eval_augment="resize(32)", batch_size=256,
        eval_batch_size=512),
}

# What a pretraining run on each dataset adds: bookkeeping and monitors.
_PRETRAINING = {
    "imagenet": dict(),
    "cifar10": dict(log_every_steps=50, checkpoint_every_steps=2000,
                    knn_every_steps=2000),
    "digits": dict(
        head_output_dim=32, log_every_steps=10, checkpoint_every_steps=50,
        knn_every_steps=50,
        # The demos' method learning rates (0.5-4 x B/256) swing a linear
        # probe on 150 steps; the monitor gets its own.
        probe_learning_rate=0.1),
    "small": dict(
        head_output_dim=64, log_every_steps=20, checkpoint_every_steps=200,
        knn_every_steps=200, probe_learning_rate=0.1),
}


# The `:small` recipes' pretraining length: a step budget, not epochs, so
# that a first run on any folder of 1k-100k images takes minutes (about 10
# on 2 CPU cores at 32 px; BENCHMARKS.md "Small data"). On a GPU, or for
# more quality, raise --config.num_train_steps.
SMALL_STEPS = 450
# ... of the `small` dataset's batch: the budget is this many images.
SMALL_IMAGES = SMALL_STEPS * DATASETS["small"]["batch_size"]


def use_small_data(c: ml_collections.ConfigDict, *,
                   batch_size: int | None = None):
  """What every `:small` recipe shares: the user's folder (which it needs:
  --config.dataset=folder:PATH), 32 px, the small ResNet, the shared views
  and the budget, no warmup (epochs of an unknown folder could outlast the
  budget). The budget is SMALL_IMAGES; a recipe with a `batch_size`
  smaller than the dataset's 256 takes proportionally more steps, so it
  sees the same images in about the same time on CPU cores. Each config
  then sets its method's numbers."""
  use_pretraining_dataset(c, "small")
  if batch_size is not None:
    if c.batch_size % batch_size:
      raise ValueError(f"batch_size {batch_size} does not divide "
                       f"{c.batch_size}")
    c.batch_size = batch_size
  c.view_augment, c.view_augment_2 = small_views(), ""
  c.num_epochs, c.num_train_steps = -1, SMALL_IMAGES // c.batch_size
  c.warmup_epochs = 0.0


def use_pretraining_dataset(c: ml_collections.ConfigDict, name: str):
  """Sets the method-independent fields of pretraining on `name`."""
  fields = {**DATASETS[name], **_PRETRAINING[name]}
  if "knn_every_steps" in fields:
    c.knn.every_steps = fields.pop("knn_every_steps")
  if "head_output_dim" in fields:
    c.head.output_dim = fields.pop("head_output_dim")
  c.update(fields)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "simclr"

  # Model: encoder (the representation h used downstream) + projection head.
  c.model = "resnet50"
  c.width_multiplier = 1
  c.cifar_stem = False          # 3x3 stride-1 stem, no max-pool (small images)
  c.patch_size = 16             # ViTs (model='vit_*'): 16 or 8
  c.vit_num_heads = 0           # ViTs: 0 = the model's own (vit_small: 12)
  # ViTs: 'sincos' (MoCo v3's fixed table) | 'learned' (DINO's, for the grid
  # of image_size, resized bicubically for other sizes); the init
  # 'moco_v3' | 'dino' (models/vit.py).
  c.vit_position_embedding = "sincos"
  c.vit_init = "moco_v3"
  c.head = ml_collections.ConfigDict(dict(
      num_layers=2,             # SimCLR v1: 2; v2: 3 (with use_bn=True)
      hidden_dim=-1,            # -1: the encoder's feature width
      output_dim=128,
      use_bn=False,             # BN after every Dense (SimCLR's heads)
      output_bias=False,        # bias on the last Dense (torchvision fc)
      # Dense init: 'flax' (LeCun normal kernels, zero biases) |
      # 'torch_linear' (PyTorch's nn.Linear default, MoCo's heads).
      dense_init="flax",
      kernel_init_stddev=-1.0,  # 'flax' only; -1: LeCun normal; SimCLR: 0.01
  ))
  c.half_precision = False      # bfloat16 compute; params and loss in float32
  # Encoder details that follow the method's reference (defaults: SimCLR's;
  # see models/resnet.py for the citations). conv_init: 'simclr' (fan_in
  # truncated normal) | 'torchvision' (kaiming normal fan_out); zero gamma
  # in each residual block's last BN; input_norm: 'none' | 'imagenet' |
  # 'cifar10', the mean/std the encoder itself subtracts/divides by.
  c.conv_init = "simclr"
  c.zero_init_residual = True
  c.input_norm = "none"
  # The ResNet's BatchNorm code: 'flax' (flax's modules) or 'fused'
  # (models/fused_norm.py: the same variables and numbers to float32
  # rounding, its training passes written out with their own VJP, for
  # fewer memory passes on accelerators; BENCHMARKS.md).
  c.bn_impl = "flax"

  # Data: 'digits', 'folder:PATH' (a directory or gs:// path of images) or
  # a prepared TFDS dataset name.
  c.dataset = "imagenet2012"
  c.data_dir = ml_collections.config_dict.placeholder(str)  # or TFDS_DATA_DIR
  c.data = ml_collections.ConfigDict(dict(
      # Image folders: stop when more than this fraction of the files are
      # damaged (each is replaced by the next good file until then).
      max_bad_fraction=0.001,
      # Image folders: resume even though files were added or removed
      # since the run's file index was written.
      allow_changed_files=False,
  ))
  # Let TFDS download and prepare a missing dataset (single-process runs).
  c.download = False
  c.train_split = "train"
  c.eval_split = "validation"
  c.image_size = 224
  c.view_augment = simclr_views(224, jitter_strength=1.0, blur=True)
  # A second spec for the second view; empty means the same as the first.
  c.view_augment_2 = ""
  # More views (multi-crop's small views, any fixed size each), for methods
  # that take them (Method.extra_views): a tuple of specs.
  c.extra_views = ()
  # Where each view's size-keeping ops (flip, colour, grayscale, blur,
  # solarize: the ops after its last crop or resize) run. False: on the
  # host, in the tf.data pipeline. True: in the train step, as JAX ops on
  # each device's batch (data/device_ops.py), with the same per-example
  # randomness; the host then only decodes and crops (2.4x its views/s per
  # core at 224 px, BENCHMARKS.md). For accelerators: on CPU the same ops
  # cost the step more than they save the pipeline.
  c.augment_on_device = False

  # Evaluation: one deterministic view; batch is global.
  c.eval_augment = "center_crop(224, crop_fraction=0.875)"
  c.eval_batch_size = 1024
  # kNN monitor during pretraining (labelled datasets; every_steps <= 0: off):
  # weighted k-NN on encoder features, train-split bank, eval-split queries.
  c.knn = ml_collections.ConfigDict(dict(
      every_steps=5000, k=200, temperature=0.1, bank_size=50_000))
  # Label-free health monitor during pretraining (any data, labels or not;
  # evaluation/health.py): RankMe of h and z, the collapse std of the
  # normalised z, alignment and uniformity, on a fixed slice of
  # num_examples train images in their two training views. every_steps: -1
  # the kNN monitor's cadence (knn.every_steps), <= 0 off.
  c.health = ml_collections.ConfigDict(dict(every_steps=-1,
                                            num_examples=512))
  # On collapse (health.collapsed) the monitor logs one warning; True: the
  # run stops with one error line instead, keeping its checkpoints.
  c.stop_on_collapse = False
  # Online linear probe: a classifier on stop-gradient(h), trained alongside
  # (0 classes: off). Needs labels; unlabelled examples (label -1) are skipped,
  # and on a dataset without labels it is off.
  c.online_probe = True
  # The probe's base learning rate (scaled by lr_scaling, on the method's
  # warmup and schedule), as solo-learn's `classifier_lr`; -1: the method's
  # learning rate, as SimCLR's supervised head.
  c.probe_learning_rate = -1.0
  c.num_classes = -1            # -1: the train split's class count

  # Method.
  c.temperature = 0.1

  # Optimisation. batch_size is GLOBAL (all devices of all processes).
  c.batch_size = 4096
  c.num_epochs = 100
  c.num_train_steps = -1        # -1: num_epochs * train examples / batch_size
  c.optimizer = "lars"          # lars | lars_solo | sgd | adamw
  c.learning_rate = 0.3         # base LR, scaled by lr_scaling
  c.lr_scaling = "linear"       # linear: lr*B/256; sqrt: lr*sqrt(B); none
  c.lr_schedule = "cosine"      # cosine | step | constant
  c.lr_decay_epochs = ()        # for 'step'
  c.lr_decay_factor = 0.1
  c.min_learning_rate = 0.0     # 'cosine' only: its floor (DINO: 1e-6)
  c.warmup_epochs = 10.0
  c.weight_decay = 1e-6
  # 'exclude_bn_bias' (SimCLR's LARS) | 'all' (torch SGD over every
  # parameter, as MoCo).
  c.weight_decay_mask = "exclude_bn_bias"
  c.momentum = 0.9
  # LARS ('lars', 'lars_solo'): the trust coefficient eta and the leaves the
  # trust ratio adapts ('exclude_bn_bias' | 'all'); 'lars_solo' only:
  # solo-learn's clip of the ratio at the learning rate, min(r / lr, 1)
  # (solo/utils/lars.py:146-147 @9187ea3). Defaults: solo-learn's
  # (solo/args/pretrain.py:165-171), SimCLR's eta.
  c.lars_eta = 1e-3
  c.lars_adapt_mask = "exclude_bn_bias"
  c.lars_clip_lr = False

  # Bookkeeping.
  c.seed = 0
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.async_checkpointing = True  # write checkpoints while training goes on
  # Steps with a non-finite loss or gradient are skipped (and counted as
  # nonfinite_steps); more than this many in a row stop the run.
  c.max_consecutive_nonfinite = 10
  # A JAX profiler trace of profile_steps steps (0: off) after step
  # profile_start_step, into the workdir for TensorBoard's profile plugin.
  c.profile_steps = 0
  c.profile_start_step = 10
  # Rows of the augmentation preview written to TensorBoard at step 0 (0: off).
  c.preview_images = 4
  return c


# The one default of each field that some configs leave out (a method's or
# the classifiers' optional fields): what code reading a config without it
# uses (config_lib.value). Every other field's is base_config()'s.
OPTIONAL_FIELDS = {
    # The optimizer (optim.py): no Nesterov, constant weight decay, no
    # gradient clipping, a constant EMA momentum.
    "nesterov": False,
    "weight_decay_end": -1.0,
    "clip_grad": 0.0,
    "ema_momentum_schedule": "constant",
    # ViTs (DINO): no stochastic depth.
    "drop_path_rate": 0.0,
    # The classifiers (config/classifier.py): no pretrained path yet, a
    # zero-initialised linear layer on h, every label, the train dataset's
    # eval split, no kNN scoring (runs from before knn_eval had none; the
    # resume check takes these over the classifier base's values too).
    "pretrained": None,
    "classifier_init_stddev": 0.0,
    "finetune_from_head_layer": 0,
    "label_percent": 100,
    "label_subset_seed": 0,
    "eval_dataset": "",
    "knn_eval": False,
}


def dotted(tree: dict, *, blocks: bool = False) -> dict[str, Any]:
  """A nested dict's fields by dotted name: {'a': {'b': 1}} -> {'a.b': 1};
  with `blocks`, each block too, before its fields: {'a': {'b': 1},
  'a.b': 1}. The one flattener of configs (field defaults, the fields an
  override may name, the resume check's comparison)."""
  flat = {}
  for key, value in tree.items():
    if not isinstance(value, dict):
      flat[key] = value
      continue
    if blocks:
      flat[key] = value
    flat.update({f"{key}.{name}": inner
                 for name, inner in dotted(value, blocks=blocks).items()})
  return flat


@functools.cache
def _base_values() -> dict:
  return dotted(base_config().to_dict(), blocks=True)


def field_default(name: str):
  """The one default of a field (dotted for a block's: 'health.
  every_steps'): base_config()'s, or OPTIONAL_FIELDS' for a field the base
  leaves out. What code reading a config that lacks the field (one that
  predates it, or a method's that leaves it out) falls back to."""
  base = _base_values()
  if name in base:
    return copy.deepcopy(base[name])
  if name in OPTIONAL_FIELDS:
    return OPTIONAL_FIELDS[name]
  raise KeyError(f"config field {name!r} has no default: add it to "
                 "base_config() or defaults.OPTIONAL_FIELDS")


def moco_base_config() -> ml_collections.ConfigDict:
  """The base plus MoCo's own fields, at the MoCo v1 paper's values."""
  c = base_config()
  c.method = "moco"
  c.queue_size = 65_536          # K negatives; a multiple of the global batch
  # Key encoder = EMA of the query encoder: m, constant or cosine up to 1.
  c.ema_momentum = 0.999
  c.ema_momentum_schedule = "constant"
  # BatchNorm: the query encoder normalises each group of
  # batch/devices/bn_groups_per_device examples on its own (the reference's
  # per-GPU BN). key_bn='shuffle' feeds the key encoder the batch permuted
  # across all groups (needs >= 2 groups in all); 'sync' uses global BN.
  c.key_bn = "shuffle"
  c.bn_groups_per_device = 1
  # Both views as query, both keys enqueued: an option of the official
  # CIFAR-10 demo (`--symmetric`), which its notebook leaves off
  # (`args.symmetric = False`), as does the MoCo paper.
  c.symmetric_loss = False
  # The optimizer recipe MoCo v1 and v2 share: SGD, lr 0.03 x B/256, no
  # warmup, 200 epochs at batch 256 (each config sets its schedule).
  c.optimizer = "sgd"
  c.learning_rate, c.lr_scaling = 0.03, "linear"
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.warmup_epochs = 0.0
  c.num_epochs = 200
  c.batch_size = 256
  # torch SGD decays every parameter, BN and biases included
  # (main_moco.py:195-197 @90e244a: `SGD(model.parameters(), ...,
  # weight_decay=)`).
  c.weight_decay_mask = "all"
  # torchvision's ResNet (moco/builder.py:26-27 @90e244a): kaiming normal
  # fan_out convs, `zero_init_residual=False`; inputs normalised by
  # ImageNet's mean/std (main_moco.py:221-222 @90e244a).
  c.conv_init = "torchvision"
  c.zero_init_residual = False
  c.input_norm = "imagenet"
  # The head's nn.Linear layers keep PyTorch's default init, U(+-1/sqrt(
  # fan_in)) for weight and bias: torchvision's init loop touches only
  # Conv2d and BN (resnet.py:148-153 @054e54c), and the v2 MLP is added
  # after it (moco/builder.py:29-32 @90e244a).
  c.head.dense_init = "torch_linear"
  return c


def moco_digits(c: ml_collections.ConfigDict, *, version: int):
  """The offline digits demo that moco_v1.py and moco_v2.py share: the data,
  queue, BN groups, key-encoder momentum and head init (each file sets its
  own learning rate and length)."""
  use_pretraining_dataset(c, "digits")
  # The digits are 8x8 strokes: very small crops erase the digit; blur
  # is the identity below 20 px anyway.
  c.view_augment = moco_views(16, version=version, blur=False,
                              crop_area=(0.25, 1.0))
  # 2 batches: with 1,438 images, a longer queue would hold keys of the
  # query's own image from the previous epoch as negatives.
  c.queue_size = 512
  # One CPU device: 4 BN groups of 64 so that shuffle-BN has groups to mix.
  c.bn_groups_per_device = 4
  # A run of a few hundred steps: a faster-moving key encoder than
  # ImageNet's 0.999.
  c.ema_momentum = 0.99
  # flax's head init, not torch's: the demos' test kNN was 80.5% (v1) and
  # 78.8% (v2) with it, 69.9% with head.dense_init='torch_linear'
  # (2026-12-01, 2 CPUs).
  c.head.dense_init = "flax"
