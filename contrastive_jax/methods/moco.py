"""MoCo v1/v2 (He et al. 2020; Chen et al. 2020): a query encoder trained to
pick its key, computed by a momentum (EMA) copy of itself, out of a queue of
keys from earlier batches.

Where each part of the method lives:
- `state.params`, `state.batch_stats`: the query encoder + head.
- the key encoder's parameters: the EMA target inside `state.opt_state`
  (`ema.ema_params`, which the optimizer factory chains last because the
  method asks for it, `Method.ema`); it never gets a gradient.
- `state.extra`: the key encoder's own BN statistics (`key_batch_stats`), the
  queue of L2-normalised keys [K, d] and its pointer (`queue_ptr`).

BatchNorm is per group, as the reference's per-GPU BN: each device's batch is
split into `bn_groups_per_device` groups (models/norm.py). The key encoder
either sees the batch shuffled across all groups (`key_bn='shuffle'`, the
reference's uniform permutation, or 'shuffle_derange', which moves every key
out of its query's group; shuffle_bn.py) or uses global BN
(`key_bn='sync'`).

The reference moves the key encoder at the start of each step, towards the
query encoder as the previous step left it; the EMA here moves it at the end
of the previous step with the same parameters, so the sequence is the same.

`symmetric_loss`: view 1's queries against view 2's keys plus the reverse,
summed, with both views' keys enqueued (2N per step): the official MoCo
CIFAR-10 demo's choice, so that its recipe carries over as it is.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import ema, losses
from contrastive_jax.config import defaults as config_defaults
from contrastive_jax.errors import ConfigError
# The same network as SimCLR's: encoder, head, optional online probe.
from contrastive_jax.methods import base, encoder_with_head, shuffle_bn
from contrastive_jax.methods.encoder_with_head import EncoderWithHead
from contrastive_jax.step_context import StepContext
from contrastive_jax.train_state import TrainState

KEY_BN_MODES = (*shuffle_bn.PERMUTATIONS, "sync")


class MoCoModel(NamedTuple):
  """The same network twice, differing only in how BatchNorm groups."""
  query: EncoderWithHead
  key: EncoderWithHead


def _require(ok: bool, field: str, value, allowed: str):
  if not ok:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def keys_per_step(config: ml_collections.ConfigDict) -> int:
  """Keys enqueued per step: the global batch, twice if symmetric."""
  return config.batch_size * (2 if config.symmetric_loss else 1)


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int):
  """MoCo's own fields; called by `config_checks.validate`."""
  base.check_temperature(config)
  _require(isinstance(config.symmetric_loss, bool), "symmetric_loss",
           config.symmetric_loss, "must be True or False")
  k, per_step = config.queue_size, keys_per_step(config)
  _require(_is_int(k) and k > 0 and k % per_step == 0, "queue_size", k,
           f"must be a positive multiple of the {per_step} keys enqueued per "
           f"step (the global batch_size"
           f"{', x2 for symmetric_loss' if config.symmetric_loss else ''})")
  _require(config.key_bn in KEY_BN_MODES, "key_bn", config.key_bn,
           f"must be one of {', '.join(KEY_BN_MODES)}")
  groups, local = config.bn_groups_per_device, config.batch_size // num_devices
  _require(_is_int(groups) and groups > 0 and local % groups == 0,
           "bn_groups_per_device", groups,
           f"must be an integer > 0 dividing the {local} examples per device")
  _require(config.key_bn == "sync" or num_devices * groups >= 2,
           "bn_groups_per_device", groups,
           f"key_bn={config.key_bn!r} needs at least 2 BN groups in all; on "
           f"{num_devices} device(s) use bn_groups_per_device >= 2, or "
           f"key_bn='sync'")


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> MoCoModel:
  """Query encoder with per-group BN; the key encoder's BN per `key_bn`.

  `axis_name` only keeps the per-group BN's running statistics replicated;
  batch statistics are shared across devices only by the 'sync' key encoder.
  """
  if config.key_bn not in KEY_BN_MODES:
    raise ConfigError(f"config.key_bn={config.key_bn!r} is invalid: must be "
                      f"one of {', '.join(KEY_BN_MODES)}")
  query = encoder_with_head.create(
      config, bn_groups=config.bn_groups_per_device, bn_axis_name=axis_name)
  key = query if config.key_bn != "sync" else encoder_with_head.create(
      config, bn_groups=None, bn_axis_name=axis_name)
  return MoCoModel(query=query, key=key)


def init_state(rng: jax.Array, *, model: MoCoModel,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  init_rng, queue_rng, state_rng = jax.random.split(rng, 3)
  size = config.image_size
  variables = model.query.init(
      init_rng, jnp.zeros((2, size, size, 3), jnp.float32), train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  opt_state = tx.init(params)  # holds the key encoder: Method.ema
  # Random unit vectors until real keys replace them (as the reference).
  queue = losses.l2_normalize(jax.random.normal(
      queue_rng, (config.queue_size, config.head.output_dim), jnp.float32))
  extra = {
      "queue": queue,
      "queue_ptr": jnp.zeros((), jnp.int32),
      # The key encoder starts as a copy of the query encoder (the EMA
      # target is one); its BN statistics then follow its own batches.
      "key_batch_stats": jax.tree.map(jnp.copy, batch_stats),
  }
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=opt_state,
                    rng=state_rng, extra=extra)


def enqueue(queue: jax.Array, ptr: jax.Array,
            keys: jax.Array) -> tuple[jax.Array, jax.Array]:
  """FIFO: `keys` [N, d] replace the N oldest rows, which start at `ptr`.

  K is a multiple of N (validated), so the block never wraps around.
  """
  queue = jax.lax.dynamic_update_slice_in_dim(
      queue, keys.astype(queue.dtype), ptr, axis=0)
  return queue, (ptr + keys.shape[0]) % queue.shape[0]


def _keys(key_model, variables, images, rng, *, config, axis_name):
  """(keys of this device's images [n, d], keys of the global batch [N, d] in
  global order, the key encoder's new batch_stats)."""

  def encode(x):
    (_, k, _), new_vars = key_model.apply(variables, x, train=True,
                                          mutable=["batch_stats"])
    return losses.l2_normalize(k), new_vars["batch_stats"]

  if config.key_bn == "sync":
    k, batch_stats = encode(images)
    return k, shuffle_bn.gather(k, axis_name), batch_stats
  groups = config.bn_groups_per_device
  num_devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
  # A pure function of (the state's rng, step, view): a resumed run draws
  # the same permutations.
  perm = shuffle_bn.PERMUTATIONS[config.key_bn](
      rng, num_devices * groups, images.shape[0] // groups)
  return shuffle_bn.shuffled_apply(encode, images, perm, axis_name=axis_name)


class Aux(NamedTuple):
  out: losses.InfoNCEOutput
  probe_metrics: dict
  batch_stats: dict      # the query encoder's
  key_batch_stats: dict
  new_keys: jax.Array    # [N or 2N, d], global order: what to enqueue


def loss_fn(params, key_params, batch, *, batch_stats, extra, rng,
            model: MoCoModel, config, axis_name):
  """The MoCo loss of the global batch (plus the online probe's, if any), as
  a function of the query and key parameters; its gradient w.r.t.
  `key_params` is zero (tested)."""
  key_vars = jax.lax.stop_gradient(
      {"params": key_params, "batch_stats": extra["key_batch_stats"]})
  view1, view2 = batch["view1"], batch["view2"]
  get_keys = lambda variables, images, i: _keys(
      model.key, variables, images, jax.random.fold_in(rng, i),
      config=config, axis_name=axis_name)
  # As the reference: keys of view 2 first (the positives of view-1
  # queries), then, if symmetric, of view 1; each pass updates the BN
  # statistics the next one starts from.
  k2, k2_all, key_bs = get_keys(key_vars, view2, 2)

  def query(stats, images):
    (_, q, logits), new_vars = model.query.apply(
        {"params": params, "batch_stats": stats}, images, train=True,
        mutable=["batch_stats"])
    return q, logits, new_vars["batch_stats"]

  q1, logits, stats = query(batch_stats, view1)
  queue = extra["queue"]
  if config.symmetric_loss:
    k1, k1_all, key_bs = get_keys({**key_vars, "batch_stats": key_bs},
                                  view1, 1)
    q2, _, stats = query(stats, view2)
    out = losses.symmetric_info_nce_with_accuracy(
        q1, q2, k1, k2, queue, temperature=config.temperature,
        axis_name=axis_name)
    new_keys = jnp.concatenate([k1_all, k2_all], axis=0)
  else:
    out = losses.info_nce_with_accuracy(
        q1, k2, queue, temperature=config.temperature, axis_name=axis_name)
    new_keys = k2_all
  # The probe sees the first view of each image.
  probe_loss, probe_metrics = base.probe_loss(logits, batch["label"],
                                              axis_name=axis_name)
  return out.loss + probe_loss, Aux(out=out, probe_metrics=probe_metrics, batch_stats=stats,
                    key_batch_stats=key_bs, new_keys=new_keys)


def train_step(state: TrainState, batch, *, model: MoCoModel,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, context: StepContext,
               axis_name: str | None):
  """One MoCo update on this device's share of the global batch."""
  # The same key on every device: the shuffle permutation must agree.
  rng = jax.random.fold_in(state.rng, state.step)
  # The loss is already global (losses/), so these are the global
  # gradients: no extra pmean.
  grads, aux = jax.grad(loss_fn, has_aux=True)(
      state.params, ema.target_params(state.opt_state), batch,
      batch_stats=state.batch_stats, extra=state.extra, rng=rng, model=model,
      config=config, axis_name=axis_name)
  # The EMA at the end of the chain moves the key encoder towards the
  # updated query encoder, ready for the next step.
  queue, ptr = enqueue(state.extra["queue"], state.extra["queue_ptr"],
                       aux.new_keys)
  extra = {**state.extra, "queue": queue, "queue_ptr": ptr,
           "key_batch_stats": aux.key_batch_stats}
  new_state = base.apply_gradients(state, grads, tx=tx,
                                   batch_stats=aux.batch_stats, extra=extra)
  metrics = base.step_metrics(
      loss=aux.out.loss, grads=grads,
      **context.metrics(state.step),
      probe_metrics=aux.probe_metrics,
      contrastive_accuracy=aux.out.accuracy,
      ema_momentum=ema.ema_state(new_state.opt_state).momentum)
  return new_state, metrics


METHOD = base.Method(
    name="moco", create_model=create_model, init_state=init_state,
    train_step=train_step, num_views=2,
    # The query encoder: the network MoCo evaluates downstream.
    encoder_variables=encoder_with_head.encoder_variables,
    projector_variables=encoder_with_head.projector_variables,
    # The key encoder: an EMA of the whole query network.
    validate_config=validate_config, ema=ema.everything,
    # The online probe (ours; MoCo trains none) is plain momentum SGD.
    no_decay=base.mask_of("probe"), probe=base.mask_of("probe"),
    # Its family adds queue_size, key_bn and the EMA's momentum.
    base_config=config_defaults.moco_base_config)
