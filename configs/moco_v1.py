"""MoCo v1 (He et al., 2020) pretraining.

Variants (`--config=configs/moco_v1.py:VARIANT`):
  imagenet  (default) the paper's ImageNet recipe: ResNet-50, linear 128-d
            head, tau=0.07, m=0.999, K=65536, B=256, SGD lr 0.03*B/256,
            momentum 0.9, wd 1e-4, 200 epochs with lr x0.1 at 120 and 160;
            crop scale 0.2-1, grayscale 0.2, jitter 0.4 (all four) always,
            flip. Per-device BN with shuffle-BN: one BN group per device, as
            the reference's 8 GPUs x 32 images; on one accelerator set
            bn_groups_per_device=8. As the reference (main_moco.py):
            weight decay on every parameter, torchvision conv init
            (kaiming normal fan_out) without zero-init residual gamma,
            ImageNet mean/std input normalisation, fc head with a bias,
            PyTorch's default nn.Linear init (head.dense_init='torch_linear').
  cifar10   the ImageNet recipe moved to CIFAR-10 (no published figure):
            ResNet-18 with CIFAR stem, 32 px, B=512 (lr 0.06), K=4096 and 8
            BN groups per device from the official CIFAR-10 demo (its 8 BN
            splits on one GPU; use 1 on 8 devices), CIFAR-10 mean/std input
            normalisation; m, tau, wd, crop scale and head stay ImageNet's.
            The demo's own recipe is configs/moco_v2.py:cifar10_demo.
  digits    offline demo on scikit-learn's handwritten digits: a tiny ResNet
            that trains in about a minute on 2 CPU cores; flax's head init
            (torch's costs this short run ~10 points of kNN).
"""

from contrastive_jax.config.defaults import (moco_base_config, moco_digits,
                                             moco_views,
                                             use_pretraining_dataset,
                                             variant_of)

VARIANTS = ("imagenet", "cifar10", "digits")


def get_config(arg: str | None = None):
  variant = variant_of("moco_v1", arg, VARIANTS, default="imagenet")
  c = moco_base_config()  # EMA m = 0.999 and the SGD recipe MoCo shares.
  # The MoCo v1 recipe; variants change the data, model size and queue.
  c.head.num_layers = 1          # linear fc to 128-d
  c.head.output_dim = 128
  c.head.output_bias = True      # torchvision's fc (builder.py:26 @90e244a)
  c.temperature = 0.07
  c.lr_schedule = "step"
  c.lr_decay_epochs, c.lr_decay_factor = (120, 160), 0.1
  if variant == "imagenet":
    use_pretraining_dataset(c, "imagenet")
    c.view_augment = moco_views(224, version=1)
    c.queue_size = 65_536
    c.bn_groups_per_device = 1
  elif variant == "cifar10":
    use_pretraining_dataset(c, "cifar10")
    c.view_augment = moco_views(32, version=1)
    c.input_norm = "cifar10"
    c.queue_size = 4096
    c.bn_groups_per_device = 8
  else:  # digits
    moco_digits(c, version=1)
    c.head.hidden_dim = 64
    # 150 steps: a higher lr, and the decays late (the loss rose after
    # decays at 18, 24).
    c.learning_rate = 0.05
    c.num_epochs = 30
    c.lr_decay_epochs = (24, 28)
  return c

