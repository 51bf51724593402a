"""VICReg (Bardes, Ponce & LeCun 2022): one encoder and projector for both
views; the projections kept close (invariance), each dimension's std above
1 (variance) and the dimensions decorrelated (covariance), over the global
batch.

Reference: facebookresearch/vicreg @4e12602 (the README table cites each
number's line). The network and step are `joint_embedding`'s; the
optimizer is the config's (one parameter group, main_vicreg.py:109-115).
"""

from contrastive_jax import losses
from contrastive_jax.methods import joint_embedding


def objective(z1, z2, *, config, axis_name):
  terms = losses.vicreg_loss(
      z1, z2, invariance_weight=config.invariance_weight,
      variance_weight=config.variance_weight,
      covariance_weight=config.covariance_weight, axis_name=axis_name)
  # Each term unweighted, for the logs.
  return terms.loss, {"invariance": terms.invariance,
                      "variance": terms.variance,
                      "covariance": terms.covariance}


METHOD = joint_embedding.method(
    "vicreg", objective, title="VICReg",
    non_negative=("invariance_weight", "variance_weight",
                  "covariance_weight"))
