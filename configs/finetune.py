"""Finetuning a pretrained encoder with a linear classifier on a fraction of
the labels (the whole network is trained, BatchNorm synchronized).

  --config=configs/finetune.py:VARIANT --config.pretrained=WORKDIR \
      --config.label_fraction=0.01

Variants: cifar10 (default), imagenet, digits (and `_moco` twins, which only
change the defaults of linear evaluation, not finetuning). label_fraction
takes the first 1%/10%/100% of the train split (TFDS split slicing, so the
subset is deterministic; not class-balanced like SimCLR's ImageNet subset
lists). Recipe: momentum SGD, lr 0.1*B/256 (official SimCLR fine-tuning
command), no weight decay, no warmup, zero-initialised classifier; epochs as
SimCLRv2: 60 for 1% of the labels, 30 for 10%, 30 for 100%.
"""

from contrastive_jax.config_classifier import classifier_config


def get_config(arg: str | None = None):
  return classifier_config("finetune", arg or "cifar10")
