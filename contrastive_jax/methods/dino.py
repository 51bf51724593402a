"""DINO (Caron et al. 2021): self-distillation with no labels. A student
(encoder + DINO head) sees every crop, two global and the local ones; a
teacher, an EMA of the student, sees the two global crops; the student's
softmax over 65,536 outputs is trained towards the teacher's centred,
sharpened one of each other view.

Reference: facebookresearch/dino @7c446df (the README table cites each
number's line).

Where each part of the method lives:
- `state.params`: the student, {'encoder', 'head' (`models.heads.
  DINOHead`), 'probe'}; `state.batch_stats` its BN statistics (a ResNet's;
  a ViT and the default head have none).
- the teacher's parameters: the EMA target inside `state.opt_state`
  (`Method.ema` selects 'encoder' and 'head': the reference's EMA runs over
  every student parameter, main_dino.py:331-335; the probe is ours). It
  never gets a gradient. It is the network evaluated (kNN, load_encoder,
  export, linear evaluation), as the reference evaluates the teacher
  (README.md:257 `--checkpoint_key teacher`):
  `encoder_with_head.target_encoder_variables`.
- `state.extra['target_batch_stats']`: the teacher's own BN statistics. The
  teacher runs in training mode, as the reference's (never put in eval
  mode), so its BNs normalise its own batch.
- `state.extra['center']`: the centre [K], an EMA of the teacher's mean
  output over the global batch (main_dino.py:401-412), checkpointed with
  the state (the reference saves `dino_loss.state_dict()`, :272).

Crops of one resolution go through the encoder together and the head sees
all of them at once, as the reference's `MultiCropWrapper` (utils.py:
594-629): a BN normalises the two global crops' 2N images together, and
the local crops' together (global over devices: SyncBatchNorm,
main_dino.py:199-201).

The student's drop-path (`config.drop_path_rate`, main_dino.py:105, :159-
162) takes its rngs from `step_context.dropout_rngs`; the teacher has none
(:163). The teacher temperature follows the reference's per-EPOCH schedule
(`teacher_temperature`); the EMA, chained last, moves the teacher after the
student's update with m of this step, as main_dino.py:331-335.

The optimizer (`optimizer`): the config's (AdamW for ViTs), built by
`optim.optimizer_from_config`: its learning rate warmed up and then on a
cosine to `min_learning_rate` (utils.py:187-198), weight decay on a cosine
(`weight_decay_end`), gradients clipped per parameter (`clip_grad`), the
head's last layer frozen for the first `freeze_last_layer` epochs
(utils.py:144-149), no decay on biases and 1-D parameters (`no_decay`,
utils.py:632-643).
"""

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import ema, losses, models, optim
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import online_probe as probe_lib
from contrastive_jax.methods import base, encoder_with_head
from contrastive_jax.models.heads import DINOHead
from contrastive_jax.step_context import StepContext, dropout_rngs
from contrastive_jax.train_state import TrainState
from contrastive_jax.config import lib as config_lib

TEACHER = ("encoder", "head")


class MultiCropNetwork(nn.Module):
  """(the head's logits of every crop [sum of views' rows, K], probe logits
  of the first view or None) of a list of views, `MultiCropWrapper`'s way:
  each run of consecutive views of one shape concatenated through the
  encoder, the head once over all the features."""
  encoder: nn.Module
  head: nn.Module
  probe: nn.Module | None = None

  def __call__(self, views, train: bool):
    if not isinstance(views, (list, tuple)):  # one batch of images
      views = [views]
    groups, start = [], 0
    for end in range(1, len(views) + 1):
      if end == len(views) or views[end].shape != views[start].shape:
        groups.append(jnp.concatenate(views[start:end]))
        start = end
    features = [self.encoder(x, train=train) for x in groups]
    logits = None
    if self.probe is not None:
      logits = self.probe(features[0][:views[0].shape[0]])
    return self.head(jnp.concatenate(features), train=train), logits


class DINOModel(NamedTuple):
  student: MultiCropNetwork
  # The same encoder (without drop-path) and head, without the probe: its
  # params are exactly the EMA target's {'encoder', 'head'}.
  teacher: MultiCropNetwork


def head_from_config(config, *, axis_name) -> DINOHead:
  h = config.head
  return DINOHead(
      output_dim=h.output_dim, num_layers=h.num_layers,
      hidden_dim=h.hidden_dim, bottleneck_dim=h.bottleneck_dim,
      use_bn=h.use_bn, norm_last_layer=h.norm_last_layer,
      bn_axis_name=axis_name, dtype=models.compute_dtype(config))


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> DINOModel:
  probe = (probe_lib.LinearProbe(config.num_classes)
           if encoder_with_head.online_probe_enabled(config) else None)
  student = MultiCropNetwork(
      encoder=models.encoder_from_config(
          config, bn_axis_name=axis_name,
          drop_path_rate=config_lib.value(config, "drop_path_rate")),
      head=head_from_config(config, axis_name=axis_name), probe=probe)
  teacher = MultiCropNetwork(
      encoder=models.encoder_from_config(config, bn_axis_name=axis_name),
      head=head_from_config(config, axis_name=axis_name))
  return DINOModel(student=student, teacher=teacher)


def _positive(config, field):
  v = config.get(field)
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
    raise ConfigError(f"config.{field}={v!r} is invalid: must be a number "
                      "> 0")


def _whole(value, field, minimum=0):
  if (isinstance(value, bool) or not isinstance(value, int)
      or value < minimum):
    raise ConfigError(f"config.{field}={value!r} is invalid: must be an "
                      f"integer >= {minimum}")


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int):
  """DINO's own fields; called by `config_checks.validate`."""
  del num_devices
  for field in ("student_temperature", "teacher_temperature",
                "warmup_teacher_temperature"):
    _positive(config, field)
  _whole(config.get("warmup_teacher_temperature_epochs"),
         "warmup_teacher_temperature_epochs")
  m = config.get("center_momentum")
  if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1:
    raise ConfigError(f"config.center_momentum={m!r} is invalid: must be a "
                      "number in [0, 1]")
  f = config.get("freeze_last_layer")
  if isinstance(f, bool) or not isinstance(f, (int, float)) or f < 0:
    raise ConfigError(f"config.freeze_last_layer={f!r} is invalid: must be "
                      "a number of epochs >= 0")
  for field in ("num_layers", "hidden_dim", "bottleneck_dim", "output_dim"):
    _whole(config.head.get(field), f"head.{field}", minimum=1)
  if not isinstance(config.head.get("norm_last_layer"), bool):
    raise ConfigError(f"config.head.norm_last_layer="
                      f"{config.head.get('norm_last_layer')!r} is invalid: "
                      "must be True or False")


def init_state(rng: jax.Array, *, model: DINOModel,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  # The teacher starts as a copy of the student (main_dino.py:205-206), its
  # centre at zero (:369).
  state = base.initial_state(rng, network=model.student, tx=tx,
                             config=config, target=TEACHER)
  center = jnp.zeros((config.head.output_dim,), jnp.float32)
  return state.replace(extra={**state.extra, "center": center})


def teacher_temperature(epoch, *, warmup: float, final: float,
                        warmup_epochs: int):
  """The reference's schedule, indexed by the integer epoch
  (main_dino.py:370-375, :380): np.linspace(warmup, final, warmup_epochs)
  for the first warmup_epochs epochs, `final` after."""
  epoch = jnp.asarray(epoch, jnp.float32)
  if warmup_epochs == 0:
    return jnp.full((), final, jnp.float32)
  fraction = epoch / max(warmup_epochs - 1, 1)
  return jnp.where(epoch < warmup_epochs,
                   warmup + (final - warmup) * fraction, final)


def last_layer(params) -> Any:
  """True for the head's `last_layer` leaves (main_dino's
  `cancel_gradients_last_layer` matches "last_layer" in the name,
  utils.py:144-149)."""
  def mark(path, _):
    names = [getattr(k, "key", None) for k in path]
    return names[:2] == ["head", "last_layer"]
  return jax.tree_util.tree_map_with_path(mark, params)


def no_decay(params) -> Any:
  """DINO's `get_params_groups` (utils.py:632-643): no weight decay on
  biases and 1-D parameters (norms' scale and bias); and none on our
  online probe. With `weight_decay_mask='all'` this is DINO's rule
  exactly (a ViT's cls token is decayed, as there)."""
  def mark(path, leaf):
    names = [getattr(k, "key", None) for k in path]
    return (names[0] == "probe" or names[-1] == "bias"
            or jnp.ndim(leaf) == 1)
  return jax.tree_util.tree_map_with_path(mark, params)


def optimizer(config, *, steps_per_epoch: int, total_steps: int,
              requests: optim.Requests) -> optim.Optimizer:
  """`Method.optimizer`: `optim.optimizer_from_config` (its cosine ends at
  `min_learning_rate`, utils.py:187-198) with the head's last layer frozen
  for the first `freeze_last_layer` epochs, its AdamW state starting when
  it does (utils.py:144-149; `optim.Requests.frozen_for_epochs`)."""
  frozen = tuple(requests.frozen_for_epochs)
  if config.freeze_last_layer > 0:
    frozen += ((last_layer, config.freeze_last_layer),)
  return optim.optimizer_from_config(
      config, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      requests=dataclasses.replace(requests, frozen_for_epochs=frozen))


def projector_variables(state: dict) -> dict:
  """The teacher's encoder and head ({'encoder', 'head'}) out of a
  checkpointed state: the EMA target (`ema.TARGET_PATH`) and its own BN
  statistics, the network DINO evaluates."""
  stats = state.get("extra", {}).get("target_batch_stats", {})
  params = ema.state_dict_target(state)
  return {"params": {k: params[k] for k in TEACHER},
          "batch_stats": {k: stats[k] for k in TEACHER if k in stats}}


def projection(config):
  """`Method.projection`: (h, z) of the teacher in inference mode, z the
  head's l2-normalised bottleneck (256-d in the reference), the embedding
  its last layer scores against 65,536 prototypes (vision_transformer.py:
  287-291): what the health monitor measures (RankMe, the collapse std,
  alignment, uniformity), as a projection head's output elsewhere."""
  encoder = models.encoder_from_config(config, bn_axis_name=None)
  head = head_from_config(config, axis_name=None)
  bottleneck = f"dense{config.head.num_layers}"

  def apply(variables, images):
    def part(name):
      return {kind: tree[name] for kind, tree in variables.items()
              if name in tree}
    h = encoder.apply(part("encoder"), images, train=False)
    _, captured = head.apply(
        part("head"), h, train=False,
        capture_intermediates=lambda m, _: m.name == bottleneck)
    z = captured["intermediates"][bottleneck]["__call__"][0]
    z = z.astype(jnp.float32)
    return h, z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, -1,
                                                    keepdims=True), 1e-24))
  return apply


def views_of(batch) -> list:
  """[view1, view2 (the global crops), view3, ... (the local ones)]."""
  views, v = [batch["view1"], batch["view2"]], 3
  while f"view{v}" in batch:
    views.append(batch[f"view{v}"])
    v += 1
  return views


class Aux(NamedTuple):
  loss: jax.Array           # DINO's loss of the global batch
  probe_metrics: dict
  batch_stats: Any          # the student's
  target_batch_stats: Any   # the teacher's
  center: jax.Array         # the centre after this step


def loss_fn(params, target_params, batch, *, batch_stats, extra, rngs,
            model: DINOModel, config, teacher_temp, axis_name):
  """DINO's loss of the global batch (plus the online probe's, if any), as
  a function of the student and teacher parameters; its gradient w.r.t.
  `target_params` is zero (tested)."""
  student = {"params": params, "batch_stats": batch_stats}
  teacher = jax.lax.stop_gradient(
      {"params": target_params, "batch_stats": extra["target_batch_stats"]})
  views = views_of(batch)
  n = views[0].shape[0]
  (s, logits), new = model.student.apply(student, views, train=True,
                                         mutable=["batch_stats"], rngs=rngs)
  (t, _), new_teacher = model.teacher.apply(teacher, views[:2], train=True,
                                            mutable=["batch_stats"])
  out = losses.dino_loss(
      s.reshape(len(views), n, -1), t.reshape(2, n, -1), extra["center"],
      student_temperature=config.student_temperature,
      teacher_temperature=teacher_temp,
      center_momentum=config.center_momentum, axis_name=axis_name)
  # The probe sees the first global view (ours; the reference has none).
  probe_loss, probe_metrics = base.probe_loss(logits, batch["label"],
                                              axis_name=axis_name)
  return out.loss + probe_loss, Aux(
      loss=out.loss, probe_metrics=probe_metrics,
      batch_stats=new.get("batch_stats", {}),
      target_batch_stats=new_teacher.get("batch_stats", {}),
      center=out.center)


def train_step(state: TrainState, batch, *, model: DINOModel,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, context: StepContext,
               axis_name: str | None):
  """One DINO update on this device's share of the global batch."""
  # The reference indexes its schedule by the loop's epoch (main_dino.py:
  # 380, `epoch` of train_one_epoch).
  temp = teacher_temperature(
      state.step // context.steps_per_epoch,
      warmup=config.warmup_teacher_temperature,
      final=config.teacher_temperature,
      warmup_epochs=config.warmup_teacher_temperature_epochs)
  # The loss is already global (losses/): these are the global gradients.
  grads, aux = jax.grad(loss_fn, has_aux=True)(
      state.params, ema.target_params(state.opt_state), batch,
      batch_stats=state.batch_stats, extra=state.extra,
      rngs=dropout_rngs(state.rng, state.step, axis_name=axis_name),
      model=model, config=config, teacher_temp=temp, axis_name=axis_name)
  # The EMA at the end of the chain moves the teacher towards the updated
  # student, ready for the next step.
  new_state = base.apply_gradients(
      state, grads, tx=tx, batch_stats=aux.batch_stats,
      extra={**state.extra, "target_batch_stats": aux.target_batch_stats,
             "center": aux.center})
  return new_state, base.step_metrics(
      loss=aux.loss, grads=grads, **context.metrics(state.step),
      probe_metrics=aux.probe_metrics, teacher_temperature=temp,
      ema_momentum=ema.ema_state(new_state.opt_state).momentum)


METHOD = base.Method(
    name="dino", create_model=create_model, init_state=init_state,
    train_step=train_step, num_views=2,
    # The local crops (config.extra_views), through the student only.
    extra_views=True,
    # The teacher: the network DINO evaluates (README.md:257).
    encoder_variables=encoder_with_head.target_encoder_variables,
    # The health monitor measures the teacher: h and its head's bottleneck.
    projector_variables=projector_variables, projection=projection,
    validate_config=validate_config,
    # The teacher: an EMA of the student's encoder and head.
    ema=base.select(*TEACHER),
    no_decay=no_decay, probe=base.mask_of("probe"),
    optimizer=optimizer)
