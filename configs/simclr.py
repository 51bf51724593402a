"""SimCLR (Chen et al., 2020) pretraining.

Variants (`--config=configs/simclr.py:VARIANT`):
  cifar10       (default) ResNet-18, CIFAR stem, B=512, tau=0.5, jitter 0.5, no
                blur, 1000 epochs, LARS lr 1.0*B/256, wd 1e-4 - the settings
                of the official SimCLR CIFAR-10 command (paper appendix B.9).
  imagenet      ResNet-50, B=4096, tau=0.1, jitter 1.0, blur, 100 epochs,
                LARS lr 0.3*B/256, wd 1e-6, 10 warmup epochs + cosine.
  imagenet1000  as imagenet, 1000 epochs, lr 0.075*sqrt(B) (paper fig. B.1).
  digits        offline demo on scikit-learn's handwritten digits: a tiny
                ResNet that trains in minutes on 2 CPU cores.
"""

from contrastive_jax.config_defaults import (base_config, simclr_views,
                                             use_pretraining_dataset)


def get_config(arg: str | None = None):
  variant = arg or "cifar10"
  c = base_config()
  c.method = "simclr"
  if variant == "cifar10":
    use_pretraining_dataset(c, "cifar10")
    c.view_augment = simclr_views(32, jitter_strength=0.5, blur=False)
    c.temperature = 0.5
    c.num_epochs = 1000
    c.learning_rate, c.lr_scaling = 1.0, "linear"
    c.weight_decay = 1e-4
  elif variant in ("imagenet", "imagenet1000"):
    use_pretraining_dataset(c, "imagenet")
    c.view_augment = simclr_views(224, jitter_strength=1.0, blur=True)
    c.batch_size = 4096
    c.temperature = 0.1
    c.weight_decay = 1e-6
    c.warmup_epochs = 10.0
    if variant == "imagenet":
      c.num_epochs = 100
      c.learning_rate, c.lr_scaling = 0.3, "linear"
    else:
      c.num_epochs = 1000
      c.learning_rate, c.lr_scaling = 0.075, "sqrt"
  elif variant == "digits":
    # Linear evaluation then scores clearly above a random encoder (README:
    # 85.0% vs 56.8%).
    use_pretraining_dataset(c, "digits")
    c.head.hidden_dim = 64
    # The digits are 8x8 strokes: very small crops erase the digit.
    c.view_augment = simclr_views(16, jitter_strength=0.5, blur=False,
                                  crop_area=(0.25, 1.0))
    c.temperature = 0.5
    c.num_epochs = 30
    c.learning_rate, c.lr_scaling = 1.0, "linear"
    c.weight_decay = 1e-4
    c.warmup_epochs = 2.0
  else:
    raise ValueError(
        f"unknown simclr config variant {variant!r}: "
        "use cifar10, imagenet, imagenet1000 or digits")
  return c
