"""Linear evaluation of a pretrained encoder: the encoder is frozen (BatchNorm
in inference mode) and a linear classifier is trained on its features.

  --config=configs/linear_eval.py:VARIANT --config.pretrained=WORKDIR

Variants: cifar10 (default), imagenet, digits - each with the SimCLR protocol
(its official linear-eval commands: SGD with Nesterov momentum, lr
0.1*B/256, no warmup, cosine decay, zero-initialised classifier; CIFAR-10
100 epochs, B=512, no weight decay; ImageNet 90 epochs, B=4096, weight decay
1e-6 as the command has it (the paper says none); SimCLR's random crop +
flip for training, centre crop for testing) or, with the suffix `_moco`
(e.g. `imagenet_moco`), the MoCo protocol (main_lincls.py: SGD lr 30, no
weight decay, 100 epochs, x0.1 at 60 and 80, batch 256, classifier kernel
N(0, 0.01^2); torchvision's RandomResizedCrop + flip for training, Resize(256)
+ CenterCrop(224), bilinear, for testing), or, with `_mocov3`, MoCo v3's
(its main_lincls.py: SGD lr 0.1*B/256, momentum 0.9, no weight decay, B=1024,
90 epochs, cosine; the same views and classifier init as `_moco`;
`_mocov3_vit`: lr 3*B/256 as CONFIG.md's ViT commands, on the cls token),
or, with `_simsiam`, SimSiam's (its main_lincls.py with --lars: apex's LARC,
eta 1e-3 without clipping, on the classifier's kernel and bias, i.e.
optimizer='lars_solo' adapting every leaf; lr 0.1*B/256, no weight decay,
B=4096, 90 epochs, cosine, no warmup; MoCo's views and classifier init), or,
with `_byol`, BYOL's (deepmind-research byol configs/eval.py: SGD with
Nesterov momentum 0.9, lr 0.2*B/256, no weight decay, B=4096, 80 epochs,
cosine, no warmup; BYOL's crop + flip for training, the central 0.875 for
testing, both bicubic).
The digits demo keeps its own crop and 30 epochs (with `_moco`: x0.1 at 18
and 24).
`--config.pretrained=random` evaluates a randomly initialised encoder
of the same architecture: the baseline every comparison needs. The encoder
architecture (and its input normalisation) comes from the pretraining
checkpoint's stored config. `feature_bn` (standardised features before the
linear layer) is in neither paper's protocol and off, except in the digits
demo, whose tiny encoder needs it.
"""

from contrastive_jax.config.classifier import classifier_config


def get_config(arg: str | None = None):
  return classifier_config("linear_eval", arg or "cifar10")
