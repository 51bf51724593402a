"""SimCLR (Chen et al., 2020): two views, one encoder, NT-Xent.

The module's `METHOD` (methods/base.py) is all the loop knows of it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import losses
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import base, encoder_with_head
from contrastive_jax.methods.encoder_with_head import EncoderWithHead
from contrastive_jax.step_context import StepContext
from contrastive_jax.train_state import TrainState

# The official code optimises loss_a + loss_b, each view's cross-entropy
# averaged over its N anchors (objective.py `add_contrastive_loss` at the
# first commit and tf2/objective.py): twice the paper's mean over 2N anchors
# (the mean is what `losses.nt_xent` returns). The scale is part of the recipe:
# LARS adds wd * w to the gradient before taking the trust ratio
# |w| / |g + wd * w|, and BN and biases get no trust ratio, so a halved
# gradient would mean a different weight decay and learning rate.
REFERENCE_LOSS_SCALE = 2.0


def contrastive_objective(z_a: jax.Array, z_b: jax.Array, *,
                          temperature: float, axis_name: str | None):
  """(the objective SimCLR optimises, the NT-Xent output it scales)."""
  out = losses.nt_xent_with_accuracy(z_a, z_b, temperature=temperature,
                                     axis_name=axis_name)
  return REFERENCE_LOSS_SCALE * out.loss, out


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> EncoderWithHead:
  return encoder_with_head.create(config, bn_axis_name=axis_name)


def init_state(rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  return base.initial_state(rng, network=model, tx=tx, config=config)


def train_step(state: TrainState, batch, *, model: nn.Module,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, context: StepContext,
               axis_name: str | None):
  """One SimCLR update on this device's share of the global batch."""
  # Both views go through the encoder as one batch, so BatchNorm statistics
  # are taken over 2N images (as in the reference implementation).
  images = jnp.concatenate([batch["view1"], batch["view2"]], axis=0)

  def loss_fn(params):
    (_, z, logits), new_vars = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, images,
        train=True, mutable=["batch_stats"])
    z_a, z_b = jnp.split(z, 2, axis=0)
    objective, out = contrastive_objective(
        z_a, z_b, temperature=config.temperature, axis_name=axis_name)
    # The probe sees the first view of each image.
    probe_loss, probe_metrics = base.probe_loss(
        None if logits is None else logits[:batch["label"].shape[0]],
        batch["label"], axis_name=axis_name)
    return objective + probe_loss, (objective, out, probe_metrics,
                                    new_vars["batch_stats"])

  # `loss` is already the global-batch loss, so these gradients are the
  # global gradients (see losses/): no extra pmean.
  grads, (objective, out, probe_metrics, batch_stats) = jax.grad(
      loss_fn, has_aux=True)(state.params)
  new_state = base.apply_gradients(state, grads, tx=tx,
                                   batch_stats=batch_stats)
  # `loss` is what the step optimises; `nt_xent` is the paper's mean over
  # 2N, comparable with other implementations' logs.
  metrics = base.step_metrics(
      loss=objective, grads=grads,
      **context.metrics(state.step),
      probe_metrics=probe_metrics, nt_xent=out.loss,
      contrastive_accuracy=out.accuracy)
  return new_state, metrics


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int):
  """SimCLR's negatives are the other images of the global batch: with one
  image there are none, the loss is 0 and nothing is learned."""
  del num_devices
  base.check_temperature(config)
  if config.batch_size < 2:
    raise ConfigError(
        f"config.batch_size={config.batch_size!r} is invalid: SimCLR "
        "contrasts each image with the other images of the global batch: "
        "must be >= 2")


METHOD = base.Method(
    name="simclr", create_model=create_model, init_state=init_state,
    train_step=train_step, num_views=2, validate_config=validate_config,
    encoder_variables=encoder_with_head.encoder_variables,
    projector_variables=encoder_with_head.projector_variables,
    # The online probe, as the tf2 code's `head_supervised`.
    no_decay=base.mask_of("probe"), probe=base.mask_of("probe"))
