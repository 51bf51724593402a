"""What Barlow Twins and VICReg share: one encoder and projector for both
views, no predictor, no target network, no negatives; an objective of the
two views' projections over the global batch that keeps their dimensions
apart.

Where each part lives:
- `state.params`: {'encoder', 'head' (the projector), 'probe'};
  `state.batch_stats` their BN statistics.
- each view goes through the network on its own, so every BN normalises
  one view's N images (global over devices: both references convert every
  BN to SyncBatchNorm, barlowtwins main.py:89 @8e8d284, vicreg
  main_vicreg.py:107 @4e12602), the running statistics updated view 1 then
  view 2, as their `projector(backbone(y1))`, `projector(backbone(y2))`.

A method of this family is `method(name, objective, ...)`: its objective,
its numeric fields' checks and any extra `Method` fields (an optimizer).
"""

import math
from typing import Callable

import jax
import ml_collections
import optax

from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import base, encoder_with_head
from contrastive_jax.methods.encoder_with_head import EncoderWithHead
from contrastive_jax.step_context import StepContext
from contrastive_jax.train_state import TrainState

# (z1, z2, *, config, axis_name) -> (the loss the step optimises, the
# method's own metrics): global-batch values (losses/).
Objective = Callable[..., tuple[jax.Array, dict]]


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> EncoderWithHead:
  return encoder_with_head.create(config, bn_axis_name=axis_name)


def init_state(rng: jax.Array, *, model: EncoderWithHead,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  return base.initial_state(rng, network=model, tx=tx, config=config)


def train_step_of(objective: Objective):
  """The method's `train_step`: `objective` of the two views' projections,
  plus the online probe's loss on view 1."""

  def train_step(state: TrainState, batch, *, model: EncoderWithHead,
                 tx: optax.GradientTransformation,
                 config: ml_collections.ConfigDict, context: StepContext,
                 axis_name: str | None):
    def loss_fn(params):
      outputs, batch_stats = encoder_with_head.apply_per_view(
          model, {"params": params, "batch_stats": state.batch_stats},
          (batch["view1"], batch["view2"]))
      (_, z1, logits), (_, z2, _) = outputs
      loss, metrics = objective(z1, z2, config=config, axis_name=axis_name)
      probe_loss, probe_metrics = base.probe_loss(logits, batch["label"],
                                                  axis_name=axis_name)
      return loss + probe_loss, (loss, metrics, probe_metrics, batch_stats)

    # The loss is already global (losses/): these are the global gradients.
    grads, (loss, metrics, probe_metrics, batch_stats) = jax.grad(
        loss_fn, has_aux=True)(state.params)
    new_state = base.apply_gradients(state, grads, tx=tx,
                                     batch_stats=batch_stats)
    return new_state, base.step_metrics(
        loss=loss, grads=grads, **context.metrics(state.step),
        probe_metrics=probe_metrics, **metrics)

  return train_step


def check_weights(config: ml_collections.ConfigDict, *, positive=(),
                  non_negative=()):
  """Each of the method's numeric fields present and finite, > 0 or >= 0."""
  for field, strict in [(f, True) for f in positive] + [
      (f, False) for f in non_negative]:
    value = config.get(field)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 if strict else value >= 0))
    if not ok:
      raise ConfigError(f"config.{field}={value!r} is invalid: must be a "
                        f"finite number {'>' if strict else '>='} 0")


def check_batch(config: ml_collections.ConfigDict, *, method: str):
  """Both objectives take statistics of each dimension over the global
  batch: one image has no variance to normalise or regularise."""
  if config.batch_size < 2:
    raise ConfigError(
        f"config.batch_size={config.batch_size!r} is invalid: {method} "
        "takes each dimension's statistics over the global batch: must be "
        ">= 2")


def method(name: str, objective: Objective, *, title: str, positive=(),
           non_negative=(), **fields) -> base.Method:
  """The `Method` of a joint-embedding objective: this module's network,
  state and step around `objective`; its config check is `check_batch`
  (`title` names the method in the message) and `check_weights` of the
  fields `positive` (> 0) and `non_negative` (>= 0). `fields` are the
  method's other `Method` fields (e.g. its `optimizer`)."""

  def validate_config(config: ml_collections.ConfigDict, *,
                      num_devices: int):
    del num_devices
    check_batch(config, method=title)
    check_weights(config, positive=positive, non_negative=non_negative)

  return base.Method(
      name=name, create_model=create_model, init_state=init_state,
      train_step=train_step_of(objective), num_views=2,
      encoder_variables=encoder_with_head.encoder_variables,
      projector_variables=encoder_with_head.projector_variables,
      validate_config=validate_config,
      # The online probe (ours; neither reference has one), as SimCLR's.
      no_decay=base.mask_of("probe"), probe=base.mask_of("probe"), **fields)
