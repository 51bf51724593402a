"""Barlow Twins (Zbontar et al. 2021) pretraining.

"ref" is facebookresearch/barlowtwins @8e8d284 (main.py; the README table
cites each number's line), "solo" vturrisi/solo-learn @9187ea3. What this
config shares with VICReg's (the data, model, LARS, schedule and views of
each variant) is contrastive_jax/config/joint_embedding.py's, which cites
both references; here are Barlow Twins' own numbers.

Variants (`--config=configs/barlow_twins.py:VARIANT`):
  imagenet (default) the reference's README command (`python main.py
           /path/to/imagenet/`, its defaults): lr 0.2*B/256 for weights and
           0.0048*B/256 for biases and BN, lambda 0.0051, projector
           8192-8192-8192 with no biases, loss x 1/16 (its 16 GPUs'
           gradient, see methods/barlow_twins.py). README: 73.5% linear
           top-1 (paper: 73.2%).
  cifar10  solo-learn's CIFAR-10 recipe (scripts/pretrain/cifar/barlow.yaml):
           lr 0.3*B/256 for every parameter, projector with biases, loss x
           0.1, lambda 0.0051, no blur, solarize 0 / 0.2. Its 92.10% is not
           reproduced here.
  small    your own folder, projector 1024-1024-1024: 92.7% linear top-1
           on real MNIST-5k against the pixels' 88.4% (BENCHMARKS.md "Small
           data"; 89.7% with VICReg's 256-wide projector).
  digits   offline demo on scikit-learn's handwritten digits (tiny ResNet x2,
           16 px, B=256, 30 epochs).
"""

from contrastive_jax.config import joint_embedding
from contrastive_jax.config.joint_embedding import views

VARIANTS = joint_embedding.VARIANTS


def get_config(arg: str | None = None):
  # The projector's Linear layers have no bias (ref main.py:195-202).
  variant, c = joint_embedding.get_config("barlow_twins", arg,
                                          hidden_bias=False)
  c.off_diagonal_weight = 0.0051           # --lambd, ref main.py:39
  # The reference's update on its 16 GPUs (README.md:60): see
  # methods/barlow_twins.py.
  c.loss_scale = 1 / 16
  # Biases and BN: the second parameter group's base lr (ref main.py:35,
  # :90-97, :168), scaled and scheduled as learning_rate (0.2, :33).
  c.bias_learning_rate = 0.0048            # ref main.py:35
  if variant == "cifar10":
    _solo_learn_cifar10(c)
  elif variant == "small":
    # The digits demo's numbers, with a 4x wider projector (1024-1024-1024:
    # Barlow Twins "benefits from very high-dimensional output vectors",
    # the paper's abstract and its ablation of the projector's width in
    # Sec. 4). Measured on MNIST-5k (BENCHMARKS.md "Small data"): 92.7%
    # linear top-1, +4.3 over the pixels, in 448 s (93.8% with seed 1);
    # the 256-wide projector gave 89.7% (+1.3).
    c.head.hidden_dim, c.head.output_dim = 1024, 1024
    c.bias_learning_rate = 0.048
  elif variant == "digits":
    # A 150-step run: ImageNet's lr ratio weights/biases, a higher lr.
    c.bias_learning_rate = 0.048
  return c


def _solo_learn_cifar10(c):
  """vturrisi/solo-learn @9187ea3: "yaml" is scripts/pretrain/cifar/
  barlow.yaml, "aug" scripts/pretrain/cifar/augmentations/asymmetric.yaml."""
  # One lr for every parameter (solo/methods/base.py: one group per
  # module), x B/256 (solo/args/pretrain.py:153-154).
  c.bias_learning_rate = c.learning_rate   # 0.3, yaml:31
  c.loss_scale = 0.1                       # yaml:21 (scale_loss)
  c.off_diagonal_weight = 0.0051           # solo/methods/barlow_twins.py:77
  # aug: crop 0.08-1, jitter 0.4/0.4/0.2/0.1 p=0.8, grayscale 0.2, no
  # blur, solarize 0 / 0.2, flip 0.5.
  c.view_augment, c.view_augment_2 = views(32, blur=(0.0, 0.0),
                                           solarize=(0.0, 0.2))
