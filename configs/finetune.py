"""Finetuning a pretrained encoder with a linear classifier on a fraction of
the labels (the whole network is trained, BatchNorm synchronized).

  --config=configs/finetune.py:VARIANT --config.pretrained=WORKDIR

Variants: cifar10 (default), imagenet, digits, each with _1pct / _10pct
(`imagenet_1pct`). ImageNet subsets are SimCLR's class-balanced lists, TFDS
`imagenet2012_subset/1pct|10pct`, evaluated on imagenet2012 `validation`;
other datasets take a seeded class-balanced sample of the train split
(`label_percent`, data/label_subset.py). Recipe: SimCLR's semi-supervised
command (its README): LARS (no Nesterov), lr 0.005*sqrt(B) at B=1024,
no weight decay, no warmup, global BN, zero-initialised classifier,
SimCLR's random crop + flip; 60 epochs for 1%, 30 for 10% and 100%. There
is no `_moco` variant: MoCo publishes no finetuning recipe.
`--config.finetune_from_head_layer=1` puts the classifier on the pretraining
head's first layer (SimCLR v2's `ft_proj_selector=1`; needs a head with a
hidden layer).
"""

from contrastive_jax.config.classifier import classifier_config


def get_config(arg: str | None = None):
  return classifier_config("finetune", arg or "cifar10")
