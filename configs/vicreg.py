"""VICReg (Bardes, Ponce & LeCun 2022) pretraining.

"ref" is facebookresearch/vicreg @4e12602 (docs/recipes.md cites each
number's line), "solo" vturrisi/solo-learn @9187ea3. What this config
shares with Barlow Twins' (the data, model, LARS, schedule and views of
each variant) is contrastive_jax/config/joint_embedding.py's, which cites
both references; here are VICReg's own numbers.

Variants (`--config=configs/vicreg.py:VARIANT`):
  imagenet (default) the reference's 1000-epoch command (README.md:80):
           lr 0.2*B/256, coefficients 25 / 25 / 1, projector
           8192-8192-8192 (Linear with bias, BN, ReLU; last Linear no
           bias). 73.2% linear top-1 (README.md:33).
  cifar10  solo-learn's CIFAR-10 recipe (scripts/pretrain/cifar/vicreg.yaml):
           lr 0.3*B/256, projector with biases, coefficients 25 / 50 / 1 in
           the reference's convention (solo's variance term sums the
           views), symmetric views (crop 0.2-1, no blur, solarize 0.1).
           Its 92.07% is not reproduced here.
  small    your own folder, projector 256-256-256: 93.7% linear top-1 on
           real MNIST-5k against the pixels' 88.4% (BENCHMARKS.md "Small
           data").
  digits   offline demo on scikit-learn's handwritten digits (tiny ResNet x2,
           16 px, B=256, 30 epochs).
"""

from contrastive_jax.config import joint_embedding
from contrastive_jax.config.joint_embedding import views

VARIANTS = joint_embedding.VARIANTS


def get_config(arg: str | None = None):
  # The projector's hidden Linear layers have a bias (ref main_vicreg.py:
  # 223-232).
  variant, c = joint_embedding.get_config("vicreg", arg, hidden_bias=True)
  # --sim-coeff, --std-coeff, --cov-coeff (ref main_vicreg.py:58-63).
  c.invariance_weight = 25.0
  c.variance_weight = 25.0
  c.covariance_weight = 1.0
  if variant == "cifar10":
    _solo_learn_cifar10(c)
  # small: the digits demo's numbers; measured on MNIST-5k (BENCHMARKS.md
  # "Small data"): 93.7% linear top-1, +5.3 over the pixels, in 551 s.
  return c


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  vicreg.yaml."""
  # yaml:20-22; solo's variance term is the SUM of the two views' hinges
  # (solo/losses/vicreg.py:55), the reference's their mean: its 25 is 50
  # here.
  c.invariance_weight, c.variance_weight, c.covariance_weight = (
      25.0, 50.0, 1.0)
  # yaml:29-57: the same pipeline for both views: crop 0.2-1, jitter
  # 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2, no blur, solarize 0.1, flip 0.5.
  c.view_augment, c.view_augment_2 = views(32, crop_area=(0.2, 1.0),
                                           blur=(0.0, 0.0),
                                           solarize=(0.1, 0.1))
