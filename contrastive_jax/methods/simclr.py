"""SimCLR (Chen et al., 2020): two views, one encoder, NT-Xent.

A method module exposes `create_model(config, *, axis_name)`,
`init_state(rng, *, model, tx, config)` and the per-device
`train_step(state, batch, *, model, tx, config, learning_rate_fn, axis_name)`;
the training loop knows nothing else about it. Optional parts the loop and
the evaluation code look for: `NUM_VIEWS` (augmented views per image, default
2), `encoder_variables(state)` (pretraining methods: the encoder to evaluate),
`warm_start(state, *, config)` and `evaluate(...)` (classifiers).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import losses
from contrastive_jax import probe as probe_lib
from contrastive_jax.methods import encoder_with_head
from contrastive_jax.methods.encoder_with_head import EncoderWithHead
from contrastive_jax.train_state import TrainState

NUM_VIEWS = 2

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
  init_rng, state_rng = jax.random.split(rng)
  size = config.image_size
  variables = model.init(init_rng, jnp.zeros((2, size, size, 3), jnp.float32),
                         train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params), rng=state_rng)


def train_step(state: TrainState, batch, *, model: nn.Module,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, learning_rate_fn,
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
    probe_metrics = {}
    total = objective
    if logits is not None:
      # The probe sees the first view of each image.
      probe_loss, probe_acc = probe_lib.loss_and_accuracy(
          logits[:batch["label"].shape[0]], batch["label"],
          axis_name=axis_name)
      total = total + probe_loss
      probe_metrics = {"probe_loss": probe_loss, "probe_accuracy": probe_acc}
    return total, (objective, out, probe_metrics, new_vars["batch_stats"])

  # `loss` is already the global-batch loss, so these gradients are the
  # global gradients (see losses.py): no extra pmean.
  grads, (objective, out, probe_metrics, batch_stats) = jax.grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  metrics = {
      # What the step optimises (the guard checks it); `nt_xent` is the
      # paper's mean over 2N, comparable with other implementations' logs.
      "loss": objective,
      "nt_xent": out.loss,
      "contrastive_accuracy": out.accuracy,
      **probe_lib.grad_norms(grads),
      "learning_rate": learning_rate_fn(state.step),
      **probe_metrics,
  }
  return new_state, metrics


def encoder_variables(state: dict) -> dict:
  """The encoder's variables out of a checkpointed state (nested dicts)."""
  return {"params": state["params"]["encoder"],
          "batch_stats": state["batch_stats"]["encoder"]}
