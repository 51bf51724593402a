"""MoCo v3 (Chen, Xie & He 2021), ResNet or ViT backbone: a base network
(encoder, projector, predictor) whose predictions of each view are contrasted
with the momentum encoder's projections of the other view, the other images
of the global batch as negatives. No queue.

Reference: facebookresearch/moco-v3 @c349e6e (the README table cites each
number's line). The ResNet and ViT variants differ only in what the config
sets (configs/moco_v3.py: the ViT's 3-layer projector and predictor with an
output BN, builder.py:112-122; AdamW) and in `stop_grad_conv1` below: this
module asks nothing else of the encoder. A ViT has no BatchNorm, so its
encoder has no batch_stats; the MLPs' BNs are the only ones.

Where each part of the method lives:
- `state.params`: the base network, {'encoder', 'head' (the projector, the
  reference's `base_encoder.fc`, or `.head` for a ViT), 'predictor',
  'probe'};
  `state.batch_stats` its BN statistics.
- the momentum encoder's parameters: the EMA target inside `state.opt_state`
  (`Method.ema` selects 'encoder' and 'head': the reference's
  `momentum_encoder` is a second encoder with its own projector and no
  predictor, builder.py:27-34, :104-109, :117-119). It never gets a
  gradient.
- `state.extra['target_batch_stats']`: the momentum encoder's own BN
  statistics. Both networks run in training mode (`model.train()`,
  main_moco.py:332), so the keys are normalised by their own batch's
  statistics; the running averages are only kept, as the reference's
  buffers.

Each view goes through each network on its own (builder.py:86-94), so every
BN normalises one view's N images (global over devices: the reference
converts every BN to SyncBatchNorm, main_moco.py:196); the running
statistics are updated view 1 then view 2.

`--stop-grad-conv1` (main_moco.py:108-110; vits.py:49-51: the patch
projection's weight and bias `requires_grad = False`) is `Method.frozen =
stop_grad_conv1`: `params['encoder']['patch_embed']` (models/vit.py's name
for the patch projection) never changes, AdamW's decoupled decay included,
so it stays at its random init. Every MoCo v3 ViT command passes the flag
(CONFIG.md:113, :130, :160), so there is no config switch: the mask marks
`patch_embed` whenever the encoder has one, and nothing for a ResNet, which
has none. The mask is then all False, but the masked step is in the
optimizer chain all the same (`Method.frozen` is one function for every
encoder): the optimizer state of a ResNet run has an empty entry more than
before ViTs, so a MoCo v3 checkpoint written before it does not restore.
The momentum encoder's copy, the EMA of a constant that starts equal to
it, stays equal to it up to the float32 rounding of m t + (1 - m) t (a few
ulp; the reference's momentum update runs over the frozen tensors too and
rounds the same way, builder.py:58-61).

The reference moves the momentum encoder at the start of each step, before
computing the keys, with m of that step (builder.py:89-94); ours
(`ema.ema_params`, chained last) moves it at the end of the previous step,
towards the same updated parameters, with m of that previous step: the same
encoder, the cosine schedule one step earlier.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import ml_collections
import optax

from contrastive_jax import ema, losses
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import base, encoder_with_head
from contrastive_jax.methods.encoder_with_head import (EncoderWithHead,
                                                      OnlineNetwork)
from contrastive_jax.step_context import StepContext
from contrastive_jax.train_state import TrainState

MOMENTUM = ("encoder", "head")


class MoCoV3Model(NamedTuple):
  # (h, z, q = predictor(z), probe logits or None) of a batch of images.
  base: OnlineNetwork
  # The same encoder and projector, without predictor or probe: its params
  # are exactly the EMA target's {'encoder', 'head'}.
  momentum: EncoderWithHead


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> MoCoV3Model:
  """Encoder, projector (`config.head`), predictor (`config.predictor`),
  and the momentum encoder + projector, with global BN over `axis_name`."""
  online, momentum = encoder_with_head.online_and_target(
      config, config.predictor, axis_name=axis_name)
  return MoCoV3Model(base=online, momentum=momentum)


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int):
  """MoCo v3's own fields; called by `config_checks.validate`."""
  del num_devices
  base.check_temperature(config)
  base.check_predictor(
      config, method="MoCo v3", config_file="configs/moco_v3.py",
      compared_with="contrasted with the momentum encoder's projection")


def init_state(rng: jax.Array, *, model: MoCoV3Model,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  # The momentum encoder starts as a copy of the base encoder and projector
  # (builder.py:32-34; the EMA target is one). Its BN buffers are torch's
  # initial ones, the same as the base network's.
  return base.initial_state(rng, network=model.base, tx=tx, config=config,
                            target=MOMENTUM)


def stop_grad_conv1(params) -> dict:
  """`Method.frozen`: True for every leaf of `params['encoder']
  ['patch_embed']` (a ViT's patch projection, vits.py:49-51), False for
  every other leaf; all False for an encoder without one (a ResNet)."""

  def mark(name, subtree):
    if (name == "encoder" and isinstance(subtree, Mapping)
        and "patch_embed" in subtree):
      return {k: jax.tree.map(lambda _, k=k: k == "patch_embed", v)
              for k, v in subtree.items()}
    return jax.tree.map(lambda _: False, subtree)

  return {k: mark(k, v) for k, v in params.items()}


class Aux(NamedTuple):
  loss: jax.Array           # MoCo v3's loss of the global batch
  probe_metrics: dict
  batch_stats: Any          # the base network's
  target_batch_stats: Any   # the momentum encoder's


def loss_fn(params, target_params, batch, *, batch_stats, extra,
            model: MoCoV3Model, temperature: float, axis_name):
  """ctr(q1, k2) + ctr(q2, k1) of the global batch (plus the online
  probe's, if any), as a function of the base and momentum parameters; its
  gradient w.r.t. `target_params` is zero (tested)."""
  base_vars = {"params": params, "batch_stats": batch_stats}
  momentum_vars = jax.lax.stop_gradient(
      {"params": target_params, "batch_stats": extra["target_batch_stats"]})
  views = [batch["view1"], batch["view2"]]
  apply = encoder_with_head.apply_per_view
  [(_, _, q1, logits), (_, _, q2, _)], stats = apply(model.base, base_vars,
                                                     views)
  [(_, k1, _), (_, k2, _)], target_stats = apply(model.momentum,
                                                 momentum_vars, views)
  loss = losses.moco_v3_loss(q1, q2, k1, k2, temperature=temperature,
                             axis_name=axis_name)
  # The probe sees the first view of each image (ours; the reference has
  # none).
  probe_loss, probe_metrics = base.probe_loss(logits, batch["label"],
                                              axis_name=axis_name)
  return loss + probe_loss, Aux(loss=loss, probe_metrics=probe_metrics,
                                batch_stats=stats,
                                target_batch_stats=target_stats)


def train_step(state: TrainState, batch, *, model: MoCoV3Model,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, context: StepContext,
               axis_name: str | None):
  """One MoCo v3 update on this device's share of the global batch."""
  # The loss is already global (losses.py): these are the global gradients.
  grads, aux = jax.grad(loss_fn, has_aux=True)(
      state.params, ema.target_params(state.opt_state), batch,
      batch_stats=state.batch_stats, extra=state.extra, model=model,
      temperature=config.temperature, axis_name=axis_name)
  # The EMA at the end of the chain moves the momentum encoder towards the
  # updated base encoder and projector, ready for the next step's keys.
  new_state = base.apply_gradients(
      state, grads, tx=tx, batch_stats=aux.batch_stats,
      extra={**state.extra, "target_batch_stats": aux.target_batch_stats})
  return new_state, base.step_metrics(
      loss=aux.loss, grads=grads, **context.metrics(state.step),
      probe_metrics=aux.probe_metrics,
      ema_momentum=ema.ema_state(new_state.opt_state).momentum)


METHOD = base.Method(
    name="moco_v3", create_model=create_model, init_state=init_state,
    train_step=train_step, num_views=2,
    # The base encoder: the network MoCo v3 evaluates downstream
    # (main_lincls.py:180-183 keeps `module.base_encoder`).
    encoder_variables=encoder_with_head.encoder_variables,
    projector_variables=encoder_with_head.projector_variables,
    validate_config=validate_config,
    # The momentum encoder: an EMA of the base encoder and projector only.
    ema=base.select(*MOMENTUM),
    # --stop-grad-conv1: a ViT's patch projection stays at its init.
    frozen=stop_grad_conv1,
    # The online probe (ours), as SimCLR's: no decay, no trust ratio.
    no_decay=base.mask_of("probe"), probe=base.mask_of("probe"))
