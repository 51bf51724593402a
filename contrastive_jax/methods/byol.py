"""BYOL (Grill et al. 2020): an online network (encoder, projector,
predictor) trained to predict, from one view, the projection of the other
view computed by a target network, an EMA of the online encoder and
projector. No negatives.

Reference: google-deepmind/deepmind-research byol/ @4822a45 (docs/recipes.md
cites each number's line).

Where each part of the method lives:
- `state.params`: the online network, {'encoder', 'head' (the projector),
  'predictor', 'probe'}; `state.batch_stats` its BN statistics.
- the target network's parameters: the EMA target inside `state.opt_state`
  (`Method.ema` selects 'encoder' and 'head', so the optimizer factory chains
  `ema.ema_params` over those two only; the predictor and the probe have no
  target). It never gets a gradient.
- `state.extra['target_batch_stats']`: the target's own BN statistics. As in
  the reference (byol_experiment.py:232-236), the target runs its BN in
  training mode, normalising by the statistics of its own batch; its running
  averages are never read by the loss, only kept, as the reference keeps
  `target_state`, so that the target encoder can be evaluated on its own.

Each view goes through each network on its own, so every BN normalises one
view's N images (global over devices), as the reference's `apply_once_fn`
per view (byol_experiment.py:166-185); the running statistics are updated
view 1 then view 2.

The reference moves the target after the online update with tau of the
current step (byol_experiment.py:337-343); `ema.ema_params`, chained last,
does the same with the same cosine schedule (`ema.cosine_momentum`).
"""

from typing import Any, NamedTuple

import jax
import ml_collections
import optax

from contrastive_jax import ema, losses
from contrastive_jax.data import view_spec
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import base, encoder_with_head
from contrastive_jax.methods.encoder_with_head import (EncoderWithHead,
                                                      OnlineNetwork)
from contrastive_jax.step_context import StepContext
from contrastive_jax.train_state import TrainState

TARGET = ("encoder", "head")


class BYOLModel(NamedTuple):
  online: OnlineNetwork
  # The same encoder and projector, without predictor or probe: its params
  # are exactly the EMA target's {'encoder', 'head'}.
  target: EncoderWithHead


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> BYOLModel:
  """Global BN (statistics over `axis_name`) everywhere, as the reference's
  `cross_replica_axis` (configs/byol.py:47-56). The projector and the
  predictor are both `config.head`'s MLP (the predictor
  `predictor_hidden_dim` wide): the reference's Linear(hidden) -> BN ->
  ReLU -> Linear(out), no BN on the output (networks.py:40-45) with
  `head.output_bn=False`."""
  online, target = encoder_with_head.online_and_target(
      config, config.head, axis_name=axis_name,
      hidden_dim=config.predictor_hidden_dim)
  return BYOLModel(online=online, target=target)


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int):
  """BYOL's own fields; called by `config_checks.validate`."""
  del num_devices
  hidden = config.get("predictor_hidden_dim")
  if (isinstance(hidden, bool) or not isinstance(hidden, int)
      or not (hidden >= 1 or hidden == -1)):
    raise ConfigError(f"config.predictor_hidden_dim={hidden!r} is invalid: "
                      "must be an integer >= 1 (or -1: the projection size)")


def init_state(rng: jax.Array, *, model: BYOLModel,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  # The target starts as a copy of the online encoder and projector (the EMA
  # target is one); the reference draws it from its own seed instead
  # (byol_experiment.py:368-385), "no significant difference" by its note.
  return base.initial_state(rng, network=model.online, tx=tx, config=config,
                            target=TARGET)


class Aux(NamedTuple):
  loss: jax.Array           # BYOL's loss of the global batch
  probe_metrics: dict
  batch_stats: Any          # the online network's
  target_batch_stats: Any


def loss_fn(params, target_params, batch, *, batch_stats, extra,
            model: BYOLModel, axis_name):
  """BYOL's loss of the global batch (plus the online probe's, if any), as a
  function of the online and target parameters; its gradient w.r.t.
  `target_params` is zero (tested)."""
  online = {"params": params, "batch_stats": batch_stats}
  target = jax.lax.stop_gradient(
      {"params": target_params, "batch_stats": extra["target_batch_stats"]})
  views = [batch["view1"], batch["view2"]]
  apply = encoder_with_head.apply_per_view
  [(_, _, p1, logits), (_, _, p2, _)], stats = apply(model.online, online,
                                                     views)
  [(_, z1, _), (_, z2, _)], target_stats = apply(model.target, target, views)
  # Multi-crop's small views (config.extra_views): through the online
  # network only, each on its own.
  small = view_spec.views_in(batch)[2:]
  if small:
    small, stats = apply(model.online, {**online, "batch_stats": stats},
                         small)
    loss = losses.byol_multicrop_loss(
        [p1, p2, *(p for _, _, p, _ in small)], [z1, z2], axis_name=axis_name)
  else:
    loss = losses.byol_loss(p1, p2, z1, z2, axis_name=axis_name)
  # The probe sees the first view of each image (as the reference's
  # classifier, byol_experiment.py:265-268).
  probe_loss, probe_metrics = base.probe_loss(logits, batch["label"],
                                              axis_name=axis_name)
  return loss + probe_loss, Aux(loss=loss, probe_metrics=probe_metrics,
                                batch_stats=stats,
                                target_batch_stats=target_stats)


def train_step(state: TrainState, batch, *, model: BYOLModel,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, context: StepContext,
               axis_name: str | None):
  """One BYOL update on this device's share of the global batch."""
  del config
  # The loss is already global (losses.py), so these are the global
  # gradients: no extra pmean.
  grads, aux = jax.grad(loss_fn, has_aux=True)(
      state.params, ema.target_params(state.opt_state), batch,
      batch_stats=state.batch_stats, extra=state.extra, model=model,
      axis_name=axis_name)
  # The EMA at the end of the chain moves the target towards the updated
  # online encoder and projector, ready for the next step.
  new_state = base.apply_gradients(
      state, grads, tx=tx, batch_stats=aux.batch_stats,
      extra={**state.extra, "target_batch_stats": aux.target_batch_stats})
  metrics = base.step_metrics(
      loss=aux.loss, grads=grads,
      **context.metrics(state.step),
      probe_metrics=aux.probe_metrics,
      ema_momentum=ema.ema_state(new_state.opt_state).momentum)
  return new_state, metrics


METHOD = base.Method(
    name="byol", create_model=create_model, init_state=init_state,
    train_step=train_step, num_views=2,
    # Multi-crop (config.extra_views): the small views as solo-learn's
    # multi-crop BYOL.
    extra_views=True,
    # The online encoder: the network BYOL evaluates downstream.
    encoder_variables=encoder_with_head.encoder_variables,
    projector_variables=encoder_with_head.projector_variables,
    validate_config=validate_config,
    # The target: an EMA of the online encoder and projector only.
    ema=base.select(*TARGET),
    # The online probe, as SimCLR's (the reference's classifier gets LARS
    # decay and adaptation on its kernel; docs/recipes.md deviations).
    no_decay=base.mask_of("probe"), probe=base.mask_of("probe"))
