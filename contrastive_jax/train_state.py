"""The training state: one plain pytree, checkpointed whole."""

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: updates applied so far
  params: Any              # trainable parameters
  batch_stats: Any         # BatchNorm running statistics
  opt_state: Any           # optax state (for MoCo it also holds the EMA target)
  rng: jax.Array           # raw uint32[2] PRNG key; folded with step each update
  # Anything else a method must carry between steps (e.g. MoCo's queue).
  extra: Any = flax.struct.field(default_factory=dict)
