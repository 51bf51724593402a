"""Supervised classifiers on a pretrained encoder: linear evaluation and
finetuning (registered as the methods 'linear_eval' and 'finetune').

linear_eval: the encoder is frozen - its variables live in `state.extra`,
  out of the optimizer's reach, and run with BatchNorm in inference mode;
  only the linear layer is trained (SimCLR/MoCo linear evaluation protocol).
finetune: encoder and linear layer are trained together, BatchNorm in
  training mode, synchronized over the data axis.
The pretrained encoder comes from `config.pretrained` (a pretraining workdir
or checkpoint). Two baselines stand in for it, each through exactly the same
protocol: 'random' keeps the random initialisation of the same architecture,
and 'pixels' is the eval view's pixels, flattened (`models.pixels`): what
any comparison needs, so that a report shows what pretraining adds.
"""

import copy
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import models
from contrastive_jax import pretrained as pretrained_lib
from contrastive_jax.config import classifier as config_classifier
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import base
from contrastive_jax.models.norm import batch_norm
from contrastive_jax.step_context import StepContext
from contrastive_jax.train_state import TrainState

RANDOM = config_classifier.RANDOM
PIXELS = config_classifier.PIXELS
BASELINES = config_classifier.BASELINES


class FirstHeadLayer(nn.Module):
  """The first hidden layer of the pretraining `ProjectionHead` (same names,
  so its pretrained params load as they are): Dense -> (BN) -> ReLU. What
  SimCLR v2 fine-tunes from (`ft_proj_selector=1`, simclr model_util.py
  `projection_head`: `hiddens_list[FLAGS.ft_proj_selector]`)."""
  hidden_dim: int | None
  use_bn: bool
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool):
    x = nn.Dense(self.hidden_dim or h.shape[-1], use_bias=not self.use_bn,
                 dtype=self.dtype, name="dense1")(h)
    if self.use_bn:
      x = batch_norm(train=train, groups=None, axis_name=self.bn_axis_name,
                     momentum=0.9, epsilon=1e-5, dtype=self.dtype)(
                         name="bn1")(x)
    return nn.relu(x).astype(jnp.float32)


class EncoderClassifier(nn.Module):
  encoder: nn.Module
  num_classes: int
  bn_axis_name: str | None = None
  feature_bn: bool = False
  # None, or the pretraining head's first layer the classifier reads.
  head: nn.Module | None = None
  # The linear layer's kernel init: 0: zeros, the classifier starts at
  # chance whatever the features (SimCLR's --zero_init_logits_layer=True);
  # > 0: N(0, stddev^2) (MoCo's 0.01, main_lincls.py:152-153 @90e244a).
  # The bias starts at zero either way.
  init_stddev: float = 0.0

  def features(self, images, *, encoder_train: bool = False):
    """What the linear layer reads, before any standardisation."""
    h = self.encoder(images, train=encoder_train).astype(jnp.float32)
    if self.head is not None:
      h = self.head(h, train=encoder_train)
    return h

  @nn.compact
  def __call__(self, images, *, train: bool, encoder_train: bool):
    h = self.features(images, encoder_train=encoder_train)
    # Features standardised by a BatchNorm without scale or shift (as MAE's
    # linear probe): at test time a fixed affine map that folds into the
    # linear layer, so the classifier stays linear, while SGD no longer
    # depends on the raw feature scale of each encoder (a random encoder's
    # features are tiny).
    if self.feature_bn:
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       use_scale=False, use_bias=False,
                       axis_name=self.bn_axis_name, name="feature_bn")(h)
    kernel_init = (nn.initializers.normal(self.init_stddev)
                   if self.init_stddev > 0 else nn.initializers.zeros)
    return nn.Dense(self.num_classes, kernel_init=kernel_init,
                    name="linear")(h)


def architecture_config(config: ml_collections.ConfigDict):
  """The config that names the encoder: the pretraining run's, unless
  evaluating a random encoder, which uses this config's own fields.
  (`config.pretrained` is checked by config_classifier.check_config.)"""
  if config.pretrained == RANDOM:
    return config
  if config.pretrained == PIXELS:
    arch = copy.deepcopy(config)
    arch.model = models.pixels.NAME
    return arch
  return pretrained_lib.read_config(config.pretrained)


def create_model(config: ml_collections.ConfigDict, *,
                 axis_name: str | None) -> EncoderClassifier:
  # The fields were checked before anything was built (check_config); the
  # class count is the train split's now.
  config_classifier.check_num_classes(config.num_classes,
                                      dataset_allowed=False)
  arch = architecture_config(config)
  # The pretraining run's architecture at this config's precision.
  dtype = models.compute_dtype(config)
  finetune = config_classifier.finetunes(config)
  encoder = models.encoder_from_config(
      arch, bn_axis_name=axis_name if finetune else None, dtype=dtype)
  return EncoderClassifier(
      encoder=encoder, num_classes=config.num_classes,
      bn_axis_name=axis_name, feature_bn=config.feature_bn,
      head=_head_layer(config, arch, dtype, axis_name),
      init_stddev=float(config_lib.value(config, "classifier_init_stddev")))


def _head_layer(config, arch, dtype, axis_name) -> FirstHeadLayer | None:
  """The head layer `finetune_from_head_layer` asks for (0: none). Its
  value is checked by check_config; whether the pretraining run's head has
  that layer is known once its config is read."""
  if config_lib.value(config, "finetune_from_head_layer") == 0:
    return None
  if arch.head.num_layers < 2:
    raise ConfigError(f"finetune_from_head_layer=1 needs a pretraining head "
                      f"with a hidden layer; this one has "
                      f"head.num_layers={arch.head.num_layers}")
  hidden = arch.head.hidden_dim
  return FirstHeadLayer(hidden_dim=None if hidden <= 0 else hidden,
                        use_bn=arch.head.use_bn, bn_axis_name=axis_name,
                        dtype=dtype)


def init_state(rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict) -> TrainState:
  init_rng, state_rng = jax.random.split(rng)
  size = config.image_size
  variables = model.init(init_rng, jnp.zeros((2, size, size, 3), jnp.float32),
                         train=False, encoder_train=False)
  params = variables["params"]
  batch_stats = dict(variables.get("batch_stats", {}))
  extra = {"pretrained_step": jnp.asarray(-1, jnp.int32)}
  if not config_classifier.finetunes(config):
    # A ViT has no BatchNorm statistics, the pixels baseline no parameters.
    extra["encoder"] = {"params": params.pop("encoder", {}),
                        "batch_stats": batch_stats.pop("encoder", {})}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params),
                    rng=state_rng, extra=extra)


def warm_start(state: TrainState, *,
               config: ml_collections.ConfigDict) -> TrainState:
  """Puts the pretrained encoder into a freshly initialised state."""
  if config.pretrained in BASELINES:
    return state
  loaded = pretrained_lib.load(config.pretrained)

  def place(new, like):
    # Checks the architecture too: a shape mismatch is a wrong checkpoint.
    def put(a, b):
      if a.shape != b.shape:
        raise ConfigError(f"config.pretrained={config.pretrained!r}: encoder "
                          f"shapes differ from this config's ({a.shape} vs "
                          f"{b.shape})")
      return jax.device_put(a, b.sharding)
    return jax.tree.map(put, new, like)

  step = jnp.asarray(loaded.step, jnp.int32)
  extra = dict(state.extra,
               pretrained_step=jax.device_put(
                   step, state.extra["pretrained_step"].sharding))
  if config_classifier.finetunes(config):
    params = dict(state.params, encoder=place(loaded.variables["params"],
                                              state.params["encoder"]))
    stats = dict(state.batch_stats)
    if "encoder" in stats:  # A ViT encoder has no BatchNorm statistics.
      stats["encoder"] = place(loaded.variables["batch_stats"],
                               stats["encoder"])
    if "head" in state.params:
      params["head"], stats = _place_head(loaded, state, stats, place)
    # The optimizer state was built for the random params: same shapes, and
    # momentum SGD/LARS start from zero traces either way.
    return state.replace(params=params, batch_stats=stats, extra=extra)
  extra["encoder"] = place(loaded.variables, state.extra["encoder"])
  return state.replace(extra=extra)


def _place_head(loaded, state, stats, place):
  """(head params, batch_stats) with the pretrained first head layer."""
  if loaded.head_variables is None:
    raise ConfigError("finetune_from_head_layer=1: the pretrained checkpoint "
                      "has no projection head")
  wanted = state.params["head"]
  head = place({k: loaded.head_variables["params"][k] for k in wanted},
               wanted)
  if "head" in state.batch_stats:
    wanted_stats = state.batch_stats["head"]
    stats = dict(stats, head=place(
        {k: loaded.head_variables["batch_stats"][k] for k in wanted_stats},
        wanted_stats))
  return head, stats


def _variables(state: TrainState, params, config):
  if config_classifier.finetunes(config):
    return {"params": params, "batch_stats": state.batch_stats}
  # Frozen: no gradient reaches the encoder.
  frozen = jax.lax.stop_gradient(state.extra["encoder"])
  return {"params": dict(params, encoder=frozen["params"]),
          "batch_stats": dict(state.batch_stats,
                              encoder=frozen["batch_stats"])}


def _global_mean(local_sum, local_count, axis_name):
  if axis_name is None:
    return local_sum / local_count
  return jax.lax.psum(local_sum, axis_name) / jax.lax.psum(
      local_count, axis_name)


def train_step(state: TrainState, batch, *, model: nn.Module,
               tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, context: StepContext,
               axis_name: str | None):
  images, labels = batch["view1"], batch["label"]
  finetune = config_classifier.finetunes(config)

  def loss_fn(params):
    variables = _variables(state, params, config)
    # A frozen encoder runs its BatchNorm in inference mode.
    logits, new_vars = model.apply(variables, images, train=True,
                                   encoder_train=finetune,
                                   mutable=["batch_stats"])
    batch_stats = dict(new_vars.get("batch_stats", {}))
    if not finetune:
      batch_stats.pop("encoder", None)  # unchanged; it lives in state.extra
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels)
    loss = _global_mean(jnp.sum(ce), jnp.float32(labels.shape[0]), axis_name)
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  hits = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  metrics = {
      "loss": loss,
      "train_accuracy": _global_mean(hits, jnp.float32(labels.shape[0]),
                                     axis_name),
      "grad_norm": optax.tree.norm(grads),
      **context.metrics(state.step),
  }
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch, *, model: nn.Module, config,
              axis_name: str | None):
  """Masked top-1/top-5 hit counts of this batch, summed over devices."""
  logits = model.apply(_variables(state, state.params, config),
                       batch["image"], train=False, encoder_train=False)
  labels, mask = batch["label"], batch["mask"]
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  hit1 = (top5[:, 0] == labels).astype(jnp.float32) * mask
  hit5 = jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32) * mask
  counts = jnp.stack([jnp.sum(hit1), jnp.sum(hit5), jnp.sum(mask)])
  return counts if axis_name is None else jax.lax.psum(counts, axis_name)


def eval_features(state: TrainState, images, *, model: nn.Module, config):
  """The features the classifier classifies (kNN in the final
  evaluation)."""
  return model.apply(_variables(state, state.params, config), images,
                     method=EncoderClassifier.features)


def prepare_config(config):
  """`config.pretrained` in one canonical form: the pretraining workdir
  for a workdir, `WORKDIR/`, or `WORKDIR/checkpoints`; WORKDIR/
  checkpoints/N for one step (normalised). One run, one name: in
  eval_results.json, and for resuming."""
  path = config_lib.value(config, "pretrained")
  if not isinstance(path, str) or not path or path in BASELINES:
    return config
  workdir, steps, named = pretrained_lib.candidates(path)
  if "://" not in workdir:
    workdir = os.path.normpath(workdir)
  canonical = (f"{workdir.rstrip('/')}/checkpoints/{steps[0]}" if named
               else workdir.rstrip("/"))
  if canonical == path:
    return config
  config = copy.deepcopy(config)
  config.pretrained = canonical
  return config


def _method(name: str, *, base_config, no_decay=None) -> base.Method:
  # One view, labels, and a final evaluation on the eval split.
  return base.Method(
      name=name, create_model=create_model, init_state=init_state,
      train_step=train_step, num_views=1, warm_start=warm_start,
      prepare_config=prepare_config,
      validate_config=config_classifier.check_config,
      eval_step=eval_step, eval_features=eval_features, needs_labels=True,
      no_decay=no_decay, base_config=base_config,
      projection=None)  # No projection head (and no health monitor).


# Linear evaluation decays the classifier, kernel and bias (SimCLR's momentum
# path adds an L2 loss on every trainable non-BN variable, simclr HEAD
# model_util.py:46-50; MoCo's SGD weight_decay covers the fc).
LINEAR_EVAL = _method("linear_eval",
                      base_config=config_classifier.linear_eval_base)
# Finetuning's LARS leaves the classifier, SimCLR's `head_supervised`, out of
# decay and of the trust ratio (model_util.py:94-100).
FINETUNE = _method("finetune", base_config=config_classifier.finetune_base,
                   no_decay=base.mask_of("linear"))
