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

from contrastive_jax import losses, models
from contrastive_jax import probe as probe_lib
from contrastive_jax.train_state import TrainState

NUM_VIEWS = 2


class EncoderWithHead(nn.Module):
  """Encoder f (representation h, used downstream) + projection head g (z),
  and optionally an online linear probe on stop-gradient(h)."""
  encoder: nn.Module
  head: nn.Module
  probe: nn.Module | None = None

  def __call__(self, images, train: bool):
    h = self.encoder(images, train=train)
    logits = self.probe(h) if self.probe is not None else None
    return h, self.head(h, train=train), logits


def compute_dtype(config: ml_collections.ConfigDict):
  return jnp.bfloat16 if config.half_precision else jnp.float32


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> EncoderWithHead:
  dtype = compute_dtype(config)
  encoder = models.create_encoder(
      config.model, width_multiplier=config.width_multiplier,
      cifar_stem=config.cifar_stem, dtype=dtype, bn_axis_name=axis_name)
  head_cfg = config.head
  head = models.ProjectionHead(
      num_layers=head_cfg.num_layers,
      hidden_dim=None if head_cfg.hidden_dim <= 0 else head_cfg.hidden_dim,
      output_dim=head_cfg.output_dim, use_bn=head_cfg.use_bn,
      bn_axis_name=axis_name, dtype=dtype)
  probe = (probe_lib.LinearProbe(config.num_classes)
           if online_probe_enabled(config) else None)
  return EncoderWithHead(encoder=encoder, head=head, probe=probe)


def online_probe_enabled(config) -> bool:
  return bool(config.online_probe) and config.num_classes > 0


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
    out = losses.nt_xent_with_accuracy(
        z_a, z_b, temperature=config.temperature, axis_name=axis_name)
    probe_metrics = {}
    total = out.loss
    if logits is not None:
      # The probe sees the first view of each image.
      probe_loss, probe_acc = probe_lib.loss_and_accuracy(
          logits[:batch["label"].shape[0]], batch["label"],
          axis_name=axis_name)
      total = total + probe_loss
      probe_metrics = {"probe_loss": probe_loss, "probe_accuracy": probe_acc}
    return total, (out, probe_metrics, new_vars["batch_stats"])

  # `loss` is already the global-batch loss, so these gradients are the
  # global gradients (see losses.py): no extra pmean.
  grads, (out, probe_metrics, batch_stats) = jax.grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  metrics = {
      "loss": out.loss,
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
