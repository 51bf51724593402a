"""What a method is: the `Method` record every method module exports as
`METHOD`, and the step pieces methods share.

The loop (train.py), the step builder (method_steps.py), evaluation, kNN and
`load_encoder` call a method only through these fields; none of them asks
which method it is. A new method is one module that builds a `Method`, one
config, and its tests: no edit to the loop.
"""

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import optim
from contrastive_jax.config import defaults as config_defaults
from contrastive_jax.methods import encoder_with_head
from contrastive_jax.methods import online_probe as probe_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.train_state import TrainState

# The step metrics every train step returns. `guards.skip_nonfinite` reads
# both to decide whether a step is applied: `loss` is what the step optimises
# (global batch), `grad_norm` the norm of the method's own gradients (the
# online probe's is `probe_grad_norm`).
REQUIRED_METRICS = ("loss", "grad_norm")


def _no_checks(config, *, num_devices: int):
  del config, num_devices


@dataclasses.dataclass(frozen=True)
class Method:
  """A method as the loop sees it. Functions, not a class hierarchy: each
  module writes its own and binds them here.

  Required:
    create_model(config, *, axis_name) -> model (any pytree of modules).
    init_state(rng, *, model, tx, config) -> TrainState.
    train_step(state, batch, *, model, tx, config, context, axis_name) ->
      (state, metrics): one update on this device's share of the global
      batch (run under shard_map over `axis_name`); metrics hold at least
      REQUIRED_METRICS, as global-batch values. `context` is the run's
      `step_context.StepContext`: step counts, epoch, schedules.
  Optional:
    num_views: augmented views per image the batch holds ('view1', ...)
      from `view_augment` (and `view_augment_2`).
    extra_views: the method also takes `config.extra_views` as views
      num_views + 1, ... (multi-crop's small views, of any size).
    encoder_variables(state_dict) -> {'params', 'batch_stats'}: the encoder
      out of a checkpointed state (nested dicts). Methods that have it
      pretrain an encoder: kNN monitor, load_encoder, export, evaluation.
      It declares which network is evaluated, each at an explicit path:
      the online one (`encoder_with_head.encoder_variables`:
      params/encoder) or the EMA target, a teacher
      (`encoder_with_head.target_encoder_variables`: ema.TARGET_PATH).
    projector_variables(state_dict) -> {'params', 'batch_stats'} of
      {'encoder', 'head'}: the encoder and projection head of a
      checkpointed state, for the health monitor's z.
    projection(config) -> apply(variables, images) -> (h, z): the network
      the health monitor measures on `projector_variables`' variables, in
      inference mode. By default the encoder and `config.head`'s MLP
      (`encoder_with_head.projection`); a method with another head gives
      its own (DINO: its head's bottleneck). None: no projection head;
      the monitor measures h alone (z taken as h, on `encoder_variables`).
      This field alone decides: a method with a projection needs
      `projector_variables` (checked when the record is made).
    eval_features(state, images, *, model, config) -> [B, d]: the
      features a classifier classifies (its encoder's h); its final
      evaluation then also scores them by kNN (`config.knn_eval`).
    prepare_config(config) -> config: the method's own fields in one
      canonical form, before the run is validated against a stored one
      (e.g. a classifier's `pretrained` path).
    warm_start(state, *, config) -> state: applied to a fresh state only
      (not on resume), e.g. a classifier loading its pretrained encoder.
    eval_step(state, batch, *, model, config, axis_name) -> [hits@1, hits@5,
      count]: the final evaluation of a classifier on the eval split.
    validate_config(config, *, num_devices): raises ConfigError for the
      method's own fields; runs before anything touches the workdir.
    needs_labels: the method trains on labels (stops on unlabelled data).
    ema(params) -> the part of the parameters an EMA follows (e.g.
      `ema.everything`, or `base.select("encoder", "head")`), or None for no
      EMA. The optimizer then carries the EMA, chained last
      (`ema.ema_params`, momentum from config.ema_momentum[_schedule]); read
      it with `ema.target_params(state.opt_state)`.
    frozen(params) -> bool pytree: parameters no update ever changes, weight
      decay included (the optimizer zeroes their updates last).
    no_decay(params) -> bool pytree: parameters that get neither weight decay
      nor LARS's trust ratio, only the optimizer's momentum step: SimCLR's
      `exclude_from_weight_decay` of its supervised head (google-research/
      simclr HEAD model_util.py:94-100; LARS's adaptation exclusions default
      to the decay ones, lars_optimizer.py:76-81).
    constant_lr(params) -> bool pytree: parameters trained at the peak
      learning rate throughout, neither warmed up nor decayed (SimSiam's
      predictor, its reference's `--fix-pred-lr`).
    probe(params) -> bool pytree: the online probe's parameters; they train
      at `config.probe_learning_rate` when it is set (> 0).
    optimizer(config, *, steps_per_epoch, total_steps, requests) ->
      `optim.Optimizer`: the method's optimizer. By default
      `optim.optimizer_from_config`, with `requests` (`optim.Requests`) made
      of the five masks above; a method that needs more (a parameter group
      frozen for its first epochs, a transformation of its own) calls it
      with its requests changed, or chains onto its `tx`. Schedules of any
      hyper-parameter it adds go into `Optimizer.schedules`: the step gets
      them in its `StepContext`.
    base_config() -> ConfigDict: the config the method's family of configs
      starts from (`methods.base_config`): a field that a stored config
      (an older run's) lacks is taken at its value there when the run
      resumes (`resume_check.default_values`). By default
      `config.defaults.base_config`; MoCo's and the classifiers' add fields
      of their own.
  """
  name: str
  create_model: Callable[..., Any]
  init_state: Callable[..., Any]
  train_step: Callable[..., Any]
  num_views: int = 2
  extra_views: bool = False
  encoder_variables: Callable[[dict], dict] | None = None
  projector_variables: Callable[[dict], dict] | None = None
  projection: Callable[[Any], Callable[..., Any]] | None = (
      encoder_with_head.projection)
  eval_features: Callable[..., Any] | None = None
  warm_start: Callable[..., Any] | None = None
  prepare_config: Callable[[Any], Any] | None = None
  eval_step: Callable[..., Any] | None = None
  validate_config: Callable[..., None] = _no_checks
  needs_labels: bool = False
  ema: Callable[[Any], Any] | None = None
  frozen: Callable[[Any], Any] | None = None
  no_decay: Callable[[Any], Any] | None = None
  constant_lr: Callable[[Any], Any] | None = None
  probe: Callable[[Any], Any] | None = None
  optimizer: Callable[..., optim.Optimizer] = optim.optimizer_from_config
  base_config: Callable[[], ml_collections.ConfigDict] = (
      config_defaults.base_config)

  def __post_init__(self):
    if self.projection is not None and self.projector_variables is None:
      raise TypeError(
          f"Method {self.name!r}: a projection needs projector_variables; "
          "set projection=None for a method without a projection head")

  @property
  def optimizer_requests(self) -> optim.Requests:
    """The method's masks as the optimizer factory takes them."""
    return optim.Requests(ema=self.ema, frozen=self.frozen,
                          no_decay=self.no_decay,
                          constant_lr=self.constant_lr, probe=self.probe)

  @property
  def pretrains_encoder(self) -> bool:
    return self.encoder_variables is not None

  @property
  def evaluates(self) -> bool:
    return self.eval_step is not None


def mask_of(*names: str) -> Callable[[Any], Any]:
  """A mask function: True for every leaf under the top-level `names` of a
  params dict (e.g. mask_of('probe') for `no_decay`)."""

  def mask(params):
    return {k: jax.tree.map(lambda _, k=k: k in names, v)
            for k, v in params.items()}

  return mask


def select(*names: str) -> Callable[[Any], Any]:
  """An EMA selector: the top-level `names` of a params dict."""
  return lambda params: {k: params[k] for k in names}


def apply_gradients(state, grads, *, tx: optax.GradientTransformation,
                    **fields):
  """`state` one step on: the optimizer's update applied to the params, the
  step counter advanced, and any other `fields` (batch_stats, extra)
  replaced."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state, **fields)


def probe_loss(logits, labels, *, axis_name) -> tuple[jax.Array, dict]:
  """(the online probe's loss to add to the method's, its metrics); zero and
  no metrics when the model has no probe (`logits` None)."""
  if logits is None:
    return 0.0, {}
  loss, accuracy = probe_lib.loss_and_accuracy(logits, labels,
                                               axis_name=axis_name)
  return loss, {"probe_loss": loss, "probe_accuracy": accuracy}


def step_metrics(*, loss, grads, learning_rate, probe_metrics=None,
                 **method_metrics) -> dict:
  """The metrics dict of a pretraining step: REQUIRED_METRICS (the probe's
  gradient norm apart), the learning rate (and the other schedules:
  `**context.metrics(step)`), the probe's and the method's own."""
  return {"loss": loss, **probe_lib.grad_norms(grads),
          "learning_rate": learning_rate, **(probe_metrics or {}),
          **method_metrics}



def initial_state(rng: jax.Array, *, network, tx: optax.GradientTransformation,
                  config, target: tuple[str, ...] = ()) -> TrainState:
  """A method's step-0 state: `network` initialised on image_size images,
  the optimizer's state, the rest of `rng` for the steps. `target` names the
  subtrees an EMA target copies (`Method.ema`): their BN statistics start
  as copies in `extra['target_batch_stats']`, for the target network to
  normalise with its own."""
  init_rng, state_rng = jax.random.split(rng)
  size = config.image_size
  variables = network.init(
      init_rng, jnp.zeros((2, size, size, 3), jnp.float32), train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  extra = {}
  if target:
    extra["target_batch_stats"] = jax.tree.map(
        jnp.copy, {k: batch_stats[k] for k in target if k in batch_stats})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(params),
                    rng=state_rng, extra=extra)


def check_temperature(config, field: str = "temperature"):
  """`config.<field>`, a softmax temperature, a finite number > 0: checked
  by the methods that read it (SimCLR, the MoCos), not for every method."""
  t = config.get(field)
  if (isinstance(t, bool) or not isinstance(t, (int, float))
      or not math.isfinite(t) or not t > 0):
    raise ConfigError(f"config.{field}={t!r} is invalid: must be a finite "
                      "number > 0")


def check_predictor(config, *, method: str, config_file: str,
                    compared_with: str):
  """The `config.predictor` MLP block: present, positive sizes, and its
  output the size of the projection it is `compared_with`."""
  predictor = config.get("predictor")
  if not isinstance(predictor, ml_collections.ConfigDict):
    raise ConfigError(f"config.predictor is missing: {method} needs its "
                      f"predictor MLP's fields ({config_file})")
  for field in ("num_layers", "hidden_dim"):
    value = predictor.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"config.predictor.{field}={value!r} is invalid: "
                        "must be an integer >= 1")
  # Named here: the MLP's own check would name head.dense_init.
  from contrastive_jax.models import heads  # pylint: disable=g-import-not-at-top
  dense_init = predictor.get("dense_init", "flax")
  if dense_init not in heads.DENSE_INITS:
    raise ConfigError(f"config.predictor.dense_init={dense_init!r} is "
                      f"invalid: must be one of {', '.join(heads.DENSE_INITS)}")
  if predictor.get("output_dim") != config.head.output_dim:
    raise ConfigError(
        f"config.predictor.output_dim={predictor.get('output_dim')!r} is "
        f"invalid: the prediction is {compared_with}: must equal "
        f"config.head.output_dim={config.head.output_dim!r}")
