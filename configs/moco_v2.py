"""MoCo v2 (Chen, Fan, Girshick and He, 2020) pretraining.

MoCo v1 (configs/moco_v1.py) with an MLP head, tau=0.2, stronger augmentation
(blur) and a cosine learning-rate schedule.

Variants (`--config=configs/moco_v2.py:VARIANT`):
  imagenet     (default) ResNet-50, head 2048-ReLU-128 (hidden = encoder
               width), tau=0.2, m=0.999, K=65536, B=256, SGD lr 0.03*B/256,
               momentum 0.9, wd 1e-4, cosine to 0 over 200 epochs, no warmup;
               crop scale 0.2-1, jitter 0.4/0.4/0.4/0.1 with p=0.8,
               grayscale 0.2, blur sigma 0.1-2 with p=0.5, flip. One BN group
               per device with shuffle-BN (the reference's 8 GPUs x 32); on
               one accelerator set bn_groups_per_device=8.
  imagenet800  as imagenet, 800 epochs.
  cifar10      the same recipe on CIFAR-10: ResNet-18 with CIFAR stem, 32 px,
               no blur, B=512 (lr 0.06), K=4096, 8 BN groups per device (the
               official CIFAR-10 demo's 8 BN splits on one GPU; use 1 on 8
               devices).
  digits       offline demo on scikit-learn's handwritten digits: a tiny
               ResNet that trains in about a minute on 2 CPU cores.
"""

from contrastive_jax.config_defaults import (moco_base_config, moco_views,
                                             use_pretraining_dataset)


def get_config(arg: str | None = None):
  variant = arg or "imagenet"
  c = moco_base_config()  # EMA m = 0.999 and the SGD recipe MoCo shares.
  # The MoCo v2 recipe; variants change the data, model size and queue.
  c.head.num_layers = 2          # Dense(encoder width) -> ReLU -> Dense(128)
  c.head.hidden_dim = -1
  c.head.output_dim = 128
  c.temperature = 0.2
  c.lr_schedule = "cosine"
  if variant in ("imagenet", "imagenet800"):
    use_pretraining_dataset(c, "imagenet")
    c.view_augment = moco_views(224, version=2)
    c.queue_size = 65_536
    c.bn_groups_per_device = 1
    c.num_epochs = 800 if variant == "imagenet800" else 200
  elif variant == "cifar10":
    use_pretraining_dataset(c, "cifar10")
    c.view_augment = moco_views(32, version=2, blur=False)
    c.queue_size = 4096
    c.bn_groups_per_device = 8
  elif variant == "digits":
    use_pretraining_dataset(c, "digits")
    # The digits are 8x8 strokes: very small crops erase the digit; blur
    # is the identity below 20 px anyway.
    c.view_augment = moco_views(16, version=2, blur=False,
                                crop_area=(0.25, 1.0))
    # 2 batches: with 1,438 images, a longer queue would hold keys of the
    # query's own image from the previous epoch as negatives.
    c.queue_size = 512
    # One CPU device: 4 BN groups of 64 so that shuffle-BN has groups to mix.
    c.bn_groups_per_device = 4
    # A 225-step run: a faster-moving key encoder than ImageNet's 0.999 and
    # a higher lr.
    c.ema_momentum = 0.99
    c.learning_rate = 0.1
    c.num_epochs = 45
  else:
    raise ValueError(
        f"unknown moco_v2 config variant {variant!r}: "
        "use imagenet, imagenet800, cifar10 or digits")
  return c
