"""VICReg (Bardes, Ponce & LeCun 2022): one encoder and projector for both
views; the projections kept close (invariance), each dimension's std above
1 (variance) and the dimensions decorrelated (covariance), over the global
batch.

Reference: facebookresearch/vicreg @4e12602 (the README table cites each
number's line). The network and step are `joint_embedding`'s; the
optimizer is the config's (one parameter group, main_vicreg.py:109-115).
"""

import ml_collections

from contrastive_jax import losses
from contrastive_jax.methods import base, encoder_with_head, joint_embedding


def objective(z1, z2, *, config, axis_name):
  terms = losses.vicreg_loss(
      z1, z2, invariance_weight=config.invariance_weight,
      variance_weight=config.variance_weight,
      covariance_weight=config.covariance_weight, axis_name=axis_name)
  # Each term unweighted, for the logs.
  return terms.loss, {"invariance": terms.invariance,
                      "variance": terms.variance,
                      "covariance": terms.covariance}


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int):
  del num_devices
  joint_embedding.check_batch(config, method="VICReg")
  joint_embedding.check_weights(
      config, non_negative=("invariance_weight", "variance_weight",
                            "covariance_weight"))


METHOD = base.Method(
    name="vicreg", create_model=joint_embedding.create_model,
    init_state=joint_embedding.init_state,
    train_step=joint_embedding.train_step_of(objective), num_views=2,
    encoder_variables=encoder_with_head.encoder_variables,
    projector_variables=encoder_with_head.projector_variables,
    validate_config=validate_config,
    # The online probe (ours; the reference has none), as SimCLR's.
    no_decay=base.mask_of("probe"), probe=base.mask_of("probe"))
