"""The input normalisation every encoder applies first, inside the encoder
so that every user of it (linear eval, load_encoder, export) feeds what the
pretraining pipeline fed: the ResNets, the ViTs and the exporters read it
here."""

import jax.numpy as jnp

# Per-channel RGB (mean, std) the encoder subtracts / divides by first, for
# images in [0, 1].
#  'none': SimCLR feeds [0, 1] as is (simclr data_util.py ends in a clip).
#  'imagenet': MoCo main_moco.py:221-222 @90e244a (torchvision's ImageNet
#    statistics).
#  'cifar10': MoCo's CIFAR-10 demo (colab/moco_cifar10_demo.ipynb, the
#    `transforms.Normalize` of its data cell).
#  'cifar10_solo': solo-learn's CIFAR-10 statistics, the same mean with the
#    per-pixel std (solo/data/pretrain_dataloader.py:207 @9187ea3).
INPUT_NORMS = {
    'none': None,
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    'cifar10_solo': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def normalize(x, name: str):
  """Images in [0, 1] normalised as `INPUT_NORMS[name]` says (float32 mean
  and std; 'none' leaves them as they are)."""
  mean_std = INPUT_NORMS[name]
  if mean_std is None:
    return x
  mean, std = (jnp.asarray(v, jnp.float32) for v in mean_std)
  return (x - mean) / std
