"""The methods' losses: NT-Xent (nt_xent.py), InfoNCE and MoCo v3's loss
(info_nce.py), BYOL's and SimSiam's (prediction.py), Barlow Twins' and
VICReg's (redundancy.py), DINO's self-distillation (distillation.py).

Every loss takes per-device arrays and, given `axis_name`, is meant to run
inside `jax.shard_map` over that mesh axis. It then returns the loss of the
whole global batch, identical on every device.

Gradients under `shard_map` (with the default `check_vma=True`): the returned
value is a `psum`, whose transpose hands every device the cotangent 1, and
`all_gather`'s transpose is a reduce-scatter, so each device receives the full
gradient w.r.t. its own embeddings from every other device's anchors. A
parameter that enters the step replicated gets its gradient summed over
devices by JAX itself: callers must NOT add a `psum`/`pmean` of the grads.
"""

from contrastive_jax.losses.distillation import DINOLossOutput, dino_loss
from contrastive_jax.losses.global_batch import l2_normalize
from contrastive_jax.losses.info_nce import (InfoNCEOutput, info_nce,
                                             info_nce_with_accuracy,
                                             moco_v3_loss,
                                             symmetric_info_nce_with_accuracy)
from contrastive_jax.losses.nt_xent import (NTXentOutput, default_block_rows,
                                            nt_xent, nt_xent_with_accuracy)
from contrastive_jax.losses.prediction import (byol_loss, byol_multicrop_loss,
                                               simsiam_loss)
from contrastive_jax.losses.redundancy import (BarlowTwinsTerms, VICRegTerms,
                                               barlow_twins_loss, vicreg_loss)

__all__ = ['BarlowTwinsTerms', 'DINOLossOutput', 'InfoNCEOutput',
           'NTXentOutput', 'VICRegTerms', 'barlow_twins_loss', 'byol_loss',
           'byol_multicrop_loss', 'dino_loss',
           'default_block_rows', 'info_nce', 'info_nce_with_accuracy',
           'l2_normalize', 'moco_v3_loss', 'nt_xent', 'nt_xent_with_accuracy',
           'simsiam_loss', 'symmetric_info_nce_with_accuracy', 'vicreg_loss']
