"""SimSiam (Chen & He 2021): one encoder and projector f for both views, a
predictor h on top, and a stop-gradient on the other view's projection. No
negatives, no momentum encoder.

Reference: facebookresearch/simsiam @a7bc177 (the README table cites each
number's line).

Where each part of the method lives:
- `state.params`: {'encoder', 'head' (the projector, the reference's
  `encoder.fc`), 'predictor', 'probe'}; `state.batch_stats` their BN
  statistics. There is no target network and no EMA.
- the predictor is trained at the peak learning rate throughout
  (`Method.constant_lr`; the reference's `--fix-pred-lr`, which its README
  command and the paper's 68.1% use).

Each view goes through the network on its own, so every BN normalises one
view's N images (global over devices: the reference converts every BN to
SyncBatchNorm, main_simsiam.py:158-161), and the running statistics are
updated view 1 then view 2, as the reference's `encoder(x1)`,
`encoder(x2)` (builder.py:55-56).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import losses, models
from contrastive_jax.methods import online_probe as probe_lib
from contrastive_jax.methods import base, encoder_with_head
from contrastive_jax.methods.encoder_with_head import OnlineNetwork
from contrastive_jax.step_context import StepContext
from contrastive_jax.train_state import TrainState


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> OnlineNetwork:
  """Encoder, projector (`config.head`), predictor (`config.predictor`),
  with global BN over `axis_name`."""
  dtype = models.compute_dtype(config)
  probe = (probe_lib.LinearProbe(config.num_classes)
           if encoder_with_head.online_probe_enabled(config) else None)
  return OnlineNetwork(
      encoder=models.encoder_from_config(config, bn_axis_name=axis_name),
      head=encoder_with_head.mlp_from_config(
          config.head, bn_axis_name=axis_name, dtype=dtype),
      predictor=encoder_with_head.mlp_from_config(
          config.predictor, bn_axis_name=axis_name, dtype=dtype),
      probe=probe)


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int):
  """SimSiam's own fields; called by `config_checks.validate`."""
  del num_devices
  base.check_predictor(
      config, method="SimSiam", config_file="configs/simsiam.py",
      compared_with="compared with the other view's projection")


def init_state(rng: jax.Array, *, model: OnlineNetwork,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  return base.initial_state(rng, network=model, tx=tx, config=config)


class Aux(NamedTuple):
  loss: jax.Array           # SimSiam's loss of the global batch
  probe_metrics: dict
  batch_stats: Any
  z_std: jax.Array          # std of the l2-normalised z (collapse monitor)


def loss_fn(params, batch, *, batch_stats, model: OnlineNetwork, axis_name):
  """SimSiam's loss of the global batch plus the online probe's."""

  def forward(stats, images):
    out, new = model.apply({"params": params, "batch_stats": stats}, images,
                           train=True, mutable=["batch_stats"])
    return out, new["batch_stats"]

  (_, z1, p1, logits), stats = forward(batch_stats, batch["view1"])
  (_, z2, p2, _), stats = forward(stats, batch["view2"])
  loss = losses.simsiam_loss(p1, p2, z1, z2, axis_name=axis_name)
  # The probe sees the first view of each image.
  probe_loss, probe_metrics = base.probe_loss(logits, batch["label"],
                                              axis_name=axis_name)
  return loss + probe_loss, Aux(
      loss=loss, probe_metrics=probe_metrics, batch_stats=stats,
      z_std=_normalised_std(jax.lax.stop_gradient(z1), axis_name))


def _normalised_std(z, axis_name) -> jax.Array:
  """The per-dimension std of l2-normalised z over the global batch,
  averaged over dimensions: about 1/sqrt(d) when healthy and 0 when the
  outputs collapse to a constant (the paper's Fig. 2 monitor)."""
  z = losses.l2_normalize(z.astype(jnp.float32))
  n = z.shape[0]
  total = n if axis_name is None else n * jax.lax.axis_size(axis_name)
  psum = (lambda x: x) if axis_name is None else (
      lambda x: jax.lax.psum(x, axis_name))
  mean = psum(jnp.sum(z, axis=0)) / total
  var = psum(jnp.sum(jnp.square(z - mean), axis=0)) / total
  return jnp.mean(jnp.sqrt(var))


def train_step(state: TrainState, batch, *, model: OnlineNetwork,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, context: StepContext,
               axis_name: str | None):
  """One SimSiam update on this device's share of the global batch."""
  del config
  # The loss is already global (losses/): these are the global gradients.
  grads, aux = jax.grad(loss_fn, has_aux=True)(
      state.params, batch, batch_stats=state.batch_stats, model=model,
      axis_name=axis_name)
  new_state = base.apply_gradients(state, grads, tx=tx,
                                   batch_stats=aux.batch_stats)
  return new_state, base.step_metrics(
      loss=aux.loss, grads=grads, **context.metrics(state.step),
      probe_metrics=aux.probe_metrics, z_std=aux.z_std)


METHOD = base.Method(
    name="simsiam", create_model=create_model, init_state=init_state,
    train_step=train_step, num_views=2,
    encoder_variables=encoder_with_head.encoder_variables,
    projector_variables=encoder_with_head.projector_variables,
    validate_config=validate_config,
    # `--fix-pred-lr` (main_simsiam.py:193-197): the predictor keeps the
    # initial lr while the rest follows the cosine.
    constant_lr=base.mask_of("predictor"),
    # The online probe (ours; the reference has none), as SimCLR's.
    no_decay=base.mask_of("probe"), probe=base.mask_of("probe"))
