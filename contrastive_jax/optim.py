"""Optimizer factory: the optimizers (LARS, solo-learn's LARS, SGD, AdamW)
and what a method asks of them (`Requests`), built from a config. The
learning-rate schedules are schedules.py's, our own optax transformations
transforms.py's.

Everything here is built from optax pieces; the logic of our own is how
config fields map onto optax arguments (which parameters get weight decay
by default is weight_decay.py's rule).
"""

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import optax

from contrastive_jax import ema as ema_lib
from contrastive_jax.transforms import (TrainedAfterState,  # noqa: F401
                                        clip_per_parameter, cosine_between,
                                        learning_rate_step,
                                        scale_by_trust_ratio, trained_after)
from contrastive_jax import solo_lars
from contrastive_jax.schedules import (LR_SCALING_RULES, LR_SCHEDULES,  # noqa: F401
                                       _check_decay_factor,
                                       check_min_learning_rate,
                                       learning_rate_schedule,
                                       scaled_learning_rate)
from contrastive_jax.weight_decay import decay_all, decay_mask
from contrastive_jax.errors import ConfigError
from contrastive_jax.config import lib as config_lib

Schedule = Callable[[Any], Any]
Mask = Callable[[Any], Any]  # params -> bool pytree

OPTIMIZERS = ('lars', 'lars_solo', 'sgd', 'adamw')
# Which parameters weight decay (`weight_decay_mask`) and LARS's trust
# ratio (`lars_adapt_mask`) apply to (see `weight_decay_mask_fn`).
WEIGHT_DECAY_MASKS = ('exclude_bn_bias', 'all')


def _check_choice(field: str, value, allowed):
  if value not in allowed:
    raise ConfigError(
        f'{field} must be one of {", ".join(allowed)}; got {value!r}')


def check_config(config) -> None:
  """The optimizer's named choices (`optimizer`, `lr_schedule`,
  `lr_scaling`, `weight_decay_mask`) and `lr_decay_factor`: run by
  `config.checks.validate` with every other field before anything is
  built; the factories below check their arguments with the same code."""
  _check_choice('optimizer', config.optimizer, OPTIMIZERS)
  _check_choice('lr_schedule', config.lr_schedule, LR_SCHEDULES)
  _check_choice('lr_scaling', config.lr_scaling, LR_SCALING_RULES)
  _check_choice('weight_decay_mask',
                config_lib.value(config, 'weight_decay_mask'),
                WEIGHT_DECAY_MASKS)
  _check_choice('lars_adapt_mask',
                config_lib.value(config, 'lars_adapt_mask'),
                WEIGHT_DECAY_MASKS)
  if (config_lib.value(config, 'lars_clip_lr')
      and config.optimizer != 'lars_solo'):
    raise ConfigError(
        f"lars_clip_lr=True is solo-learn's clip of the trust ratio: it needs "
        f"optimizer='lars_solo'; got optimizer={config.optimizer!r}")
  if config.lr_schedule == 'step':
    _check_decay_factor(config_lib.value(config, 'lr_decay_factor'))
  check_min_learning_rate(
      config_lib.value(config, 'min_learning_rate'), config.lr_schedule,
      scaled_learning_rate(config.learning_rate, config.batch_size,
                           config.lr_scaling))


def weight_decay_mask_fn(name: str) -> Callable[[Any], Any]:
  """The mask function of weight decay named `name`.

  'exclude_bn_bias': `decay_mask` (SimCLR's LARS excludes 'batch_
    normalization' and 'bias' variables, simclr model_util.py get_optimizer).
  'all': every parameter, BN and biases included, as torch's
    `SGD(model.parameters(), weight_decay=...)` in MoCo (main_moco.py:195-197 @90e244a
    and the CIFAR-10 demo's optimizer cell).
  """
  if name == 'exclude_bn_bias':
    return decay_mask
  _check_choice('weight_decay_mask', name, WEIGHT_DECAY_MASKS)
  return decay_all  # 'all'


def _without(mask_fn: Callable[[Any], Any],
             excluded: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
  """`mask_fn` with the leaves `excluded` marks set to False."""
  if excluded is None:
    return mask_fn
  return lambda params: jax.tree.map(lambda keep, out: keep and not out,
                                     mask_fn(params), excluded(params))


def lars(learning_rate: float | Schedule, *, weight_decay: float,
         trust_coefficient: float, momentum: float,
         nesterov: bool, wd_mask=decay_mask,
         adapt_mask=decay_mask,
         lr_groups=()) -> optax.GradientTransformation:
  """`optax.lars` with both masks `decay_mask` and our `scale_by_trust_ratio`:
  the same chain, so the same updates and the same state structure.
  `wd_mask` is the decay's mask, `adapt_mask` the trust ratio's; by default
  both skip BN and biases, as SimCLR's LARS (its layer-adaptation
  exclusions default to the weight-decay ones)."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=wd_mask),
      optax.masked(scale_by_trust_ratio(trust_coefficient), adapt_mask),
      learning_rate_step(learning_rate, lr_groups),
      optax.trace(decay=momentum, nesterov=nesterov))


def lars_solo(learning_rate: float | Schedule, *, weight_decay,
              trust_coefficient: float, clip_lr: bool, momentum: float,
              nesterov: bool, wd_mask=decay_mask, adapt_mask=decay_mask,
              lr_groups=()) -> optax.GradientTransformation:
  """solo-learn's LARS (= apex's LARC around torch's SGD; solo_lars.py):
  the trust ratio with eps 1e-8 and, with `clip_lr`, min(r / lr, 1) at
  each step's learning rate (the schedule's); then momentum, then the
  learning rate. The leaves `adapt_mask` leaves out get plain g, no
  decay (solo-learn's `exclude_bias_n_norm`)."""
  return optax.chain(
      solo_lars.scale_by_solo_trust_ratio(
          eta=trust_coefficient, weight_decay=weight_decay, clip_lr=clip_lr,
          learning_rate=learning_rate, adapt_mask=adapt_mask,
          wd_mask=wd_mask, lr_groups=lr_groups),
      optax.trace(decay=momentum, nesterov=nesterov),
      learning_rate_step(learning_rate, lr_groups))


def create_optimizer(
    *,
    name: str,
    learning_rate: float | Schedule,
    weight_decay: float | Schedule,
    momentum: float = 0.9,
    nesterov: bool = False,
    trust_coefficient: float = 0.001,
    clip_lr: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    weight_decay_mask: str = 'exclude_bn_bias',
    adapt_mask: str = 'exclude_bn_bias',
    no_decay: Callable[[Any], Any] | None = None,
    lr_groups: Sequence[tuple[Callable[[Any], Any], float | Schedule]] = (),
) -> optax.GradientTransformation:
  """Builds 'lars', 'lars_solo', 'sgd' or 'adamw', with decay masked by
  the mask named `weight_decay_mask` (see `weight_decay_mask_fn`; the
  default: `decay_mask`).

  'lars': SimCLR/BYOL LARS. Kernels get wd * w added to the gradient and the
    trust ratio eta * |w| / |g + wd * w|; biases and BN get neither, only
    momentum SGD. `adapt_mask` names the trust ratio's mask.
  'lars_solo': solo-learn's LARS (`lars_solo`): the leaves of the mask
    named `adapt_mask` get (g + wd w) r, r = eta |w| / (|g| + wd |w| +
    1e-8), min(r / lr, 1) with `clip_lr`; the others plain g; momentum,
    then the lr.
  'sgd': torch-style SGD (MoCo): L2 decay added to the gradient before
    momentum, on masked leaves only.
  'adamw': decoupled decay on masked leaves; `momentum` is unused (b1 is).
  `no_decay(params)`, a bool pytree, takes leaves out of weight decay and
  out of LARS's trust ratio (a method's request, `Method.no_decay`).
  `lr_groups`: (mask_fn, learning rate) pairs: the leaves each mask marks
  are trained at that learning rate instead (`learning_rate_step`).
  """
  _check_choice('optimizer', name, OPTIMIZERS)
  if not callable(learning_rate) and not learning_rate > 0:
    raise ConfigError(f'learning_rate must be positive; got {learning_rate}')
  if not callable(weight_decay) and weight_decay < 0:
    raise ConfigError(f'weight_decay must be >= 0; got {weight_decay}')
  if not 0 <= momentum < 1:
    raise ConfigError(f'momentum must be in [0, 1); got {momentum}')
  wd_mask = _without(weight_decay_mask_fn(weight_decay_mask), no_decay)
  adapt = _without(weight_decay_mask_fn(adapt_mask), no_decay)
  if not trust_coefficient > 0:
    raise ConfigError(f'lars_eta must be > 0; got {trust_coefficient}')

  if name == 'lars':
    return lars(learning_rate, weight_decay=weight_decay,
                trust_coefficient=trust_coefficient, momentum=momentum,
                nesterov=nesterov, wd_mask=wd_mask, adapt_mask=adapt,
                lr_groups=lr_groups)
  if name == 'lars_solo':
    return lars_solo(learning_rate, weight_decay=weight_decay,
                     trust_coefficient=trust_coefficient, clip_lr=clip_lr,
                     momentum=momentum, nesterov=nesterov, wd_mask=wd_mask,
                     adapt_mask=adapt, lr_groups=lr_groups)
  if name == 'sgd':
    decay = optax.add_decayed_weights(weight_decay, mask=wd_mask)
    if not lr_groups:  # optax.sgd's chain, as checkpoints hold it.
      return optax.chain(decay, optax.sgd(
          learning_rate, momentum=momentum or None, nesterov=nesterov))
    # torch's SGD: decay added to the gradient, momentum, then the lr.
    return optax.chain(
        decay, optax.trace(decay=momentum, nesterov=nesterov)
        if momentum else optax.identity(),
        learning_rate_step(learning_rate, lr_groups))
  if not lr_groups:
    return optax.adamw(
        learning_rate, b1=b1, b2=b2, weight_decay=weight_decay, mask=wd_mask)
  return optax.chain(
      optax.scale_by_adam(b1=b1, b2=b2),
      optax.add_decayed_weights(weight_decay, mask=wd_mask),
      learning_rate_step(learning_rate, lr_groups))


@dataclasses.dataclass(frozen=True)
class Requests:
  """What a method asks of its optimizer beyond the config's fields (the
  `methods.base.Method` fields of the same names; `Method.optimizer` may
  change them).

  no_decay: leaves with neither weight decay nor LARS adaptation.
  constant_lr: leaves trained at the peak learning rate throughout, with
    neither warmup nor decay.
  probe: the online probe's leaves. With `probe_learning_rate` > 0 they
    follow the same warmup and schedule scaled to that base learning rate
    (after `lr_scaling`), as solo-learn's `classifier_lr`; otherwise the
    method's learning rate.
  frozen: leaves whose updates are zeroed after everything else (weight
    decay included, also AdamW's decoupled decay), so they never change.
  frozen_for_epochs: (mask, epochs) pairs, masks disjoint: the leaves of
    each mask get neither a gradient nor an update for the first `epochs`
    epochs (DINO's last layer, main_dino.py `cancel_gradients_last_layer`),
    and their optimizer state (Adam's moments and step count) starts when
    they do, as torch's (`transforms.trained_after`).
  ema: the parameters an EMA follows; `ema.ema_params` is then chained
    last, so the optimizer state also carries the EMA target (read it with
    `ema.target_params`), with momentum `ema_momentum` and
    `ema_momentum_schedule` ('constant', or 'cosine' from `ema_momentum`
    up to 1 at the last step).
  """
  no_decay: Mask | None = None
  constant_lr: Mask | None = None
  probe: Mask | None = None
  frozen: Mask | None = None
  frozen_for_epochs: Sequence[tuple[Mask, float]] = ()
  ema: Mask | None = None


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A built optimizer: the transformation, its learning-rate schedule and
  its other scheduled hyper-parameters by name (for the step's metrics)."""
  tx: optax.GradientTransformation
  learning_rate: Schedule
  schedules: Mapping[str, Schedule] = dataclasses.field(default_factory=dict)


def create_optimizer_from_config(
    config, *, steps_per_epoch: int, total_steps: int,
    ema: Mask | None = None, frozen: Mask | None = None,
    no_decay: Mask | None = None, constant_lr: Mask | None = None,
    probe: Mask | None = None,
) -> tuple[optax.GradientTransformation, Schedule]:
  """(optimizer, schedule) from the training config and a method's masks
  (`Requests`' fields): `optimizer_from_config` in two values."""
  built = optimizer_from_config(
      config, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      requests=Requests(ema=ema, frozen=frozen, no_decay=no_decay,
                        constant_lr=constant_lr, probe=probe))
  return built.tx, built.learning_rate


def optimizer_from_config(config, *, steps_per_epoch: int, total_steps: int,
                          requests: Requests = Requests()) -> Optimizer:
  """The optimizer of the training config and a method's `requests`: the
  default of `methods.base.Method.optimizer`.

  Reads `optimizer`, `learning_rate` (base, before `lr_scaling` by
  `batch_size`), `weight_decay`, `momentum`, `warmup_epochs`, `lr_schedule`,
  for 'cosine' `min_learning_rate` (its floor, default 0),
  and, for 'step', `lr_decay_epochs` and `lr_decay_factor`; for the LARS
  optimizers `lars_eta` and `lars_adapt_mask`, for 'lars_solo'
  `lars_clip_lr`. Epochs may be
  fractional; they are rounded to whole steps. Two fields that any method
  may set, off by default:
  `weight_decay_end` (>= 0): weight decay on a cosine from `weight_decay`
    at step 0 to `weight_decay_end` at the last step, as DINO's
    (main_dino.py `wd_schedule`, utils.cosine_scheduler); the schedule is
    logged as `weight_decay`.
  `clip_grad` (> 0): every parameter's gradient clipped to that norm on its
    own, before the optimizer (DINO's utils.clip_gradients, main_dino.py
    `--clip_grad`).
  With both off (and no `frozen_for_epochs`), the chain is the one earlier
  checkpoints hold.
  """
  if steps_per_epoch <= 0:
    raise ConfigError(
        f'batch_size must not exceed the training set; got {steps_per_epoch} '
        f'steps per epoch')

  def to_steps(epochs):
    return int(round(epochs * steps_per_epoch))

  peak_lr = scaled_learning_rate(
      config.learning_rate, config.batch_size, config.lr_scaling)
  schedule = learning_rate_schedule(
      peak_lr=peak_lr,
      total_steps=total_steps,
      warmup_steps=to_steps(config.warmup_epochs),
      schedule=config.lr_schedule,
      decay_boundaries=[
          to_steps(e) for e in config.get('lr_decay_epochs') or ()],
      decay_factor=config_lib.value(config, 'lr_decay_factor'),
      min_learning_rate=config_lib.value(config, 'min_learning_rate'))
  schedules = {}
  weight_decay = config.weight_decay
  weight_decay_end = config_lib.value(config, 'weight_decay_end')
  if weight_decay_end >= 0:
    weight_decay = schedules['weight_decay'] = cosine_between(
        config.weight_decay, weight_decay_end, total_steps)

  def build(shift: int) -> optax.GradientTransformation:
    """The optimizer on the schedules' steps `shift` later (a group that
    starts training at step `shift` counts from 0 there)."""
    lr, wd = _shifted(schedule, shift), _shifted(weight_decay, shift)
    return create_optimizer(
        name=config.optimizer,
        learning_rate=lr,
        weight_decay=wd,
        momentum=config.momentum,
        nesterov=config_lib.value(config, 'nesterov'),
        trust_coefficient=config_lib.value(config, 'lars_eta'),
        clip_lr=config_lib.value(config, 'lars_clip_lr'),
        weight_decay_mask=config_lib.value(config, 'weight_decay_mask'),
        adapt_mask=config_lib.value(config, 'lars_adapt_mask'),
        no_decay=requests.no_decay,
        lr_groups=_lr_groups(config, lr, peak_lr,
                             constant_lr=requests.constant_lr,
                             probe=requests.probe))

  tx = _with_frozen_groups(build, [
      (mask, to_steps(epochs))
      for mask, epochs in requests.frozen_for_epochs])
  if config_lib.value(config, 'clip_grad') > 0:
    tx = optax.chain(clip_per_parameter(config.clip_grad), tx)
  if requests.frozen is not None:
    tx = optax.chain(tx, optax.masked(optax.set_to_zero(), requests.frozen))
  if requests.ema is not None:
    tx = optax.chain(tx, ema_lib.ema_params(ema_lib.momentum_schedule(
        config.ema_momentum, config_lib.value(config, 'ema_momentum_schedule'),
        total_steps), select=requests.ema))
  return Optimizer(tx=tx, learning_rate=schedule, schedules=schedules)


def _shifted(value, shift: int):
  """A schedule read `shift` steps later; a number as it is."""
  if not shift or not callable(value):
    return value
  return lambda step: value(step + shift)


def _with_frozen_groups(build, groups) -> optax.GradientTransformation:
  """`build(0)` for every leaf outside `groups`, (mask, steps) pairs; the
  leaves of each group trained by their own `build(steps)` from step
  `steps` on (`trained_after`). Groups of 0 steps are not frozen."""
  groups = [(mask, steps) for mask, steps in groups if steps > 0]
  if not groups:
    return build(0)

  def rest(params):
    marked = [mask(params) for mask, _ in groups]
    return jax.tree.map(lambda *m: not any(m), *marked)

  return optax.chain(optax.masked(build(0), rest),
                     *[trained_after(build(steps), mask, steps)
                       for mask, steps in groups])


def _lr_groups(config, schedule, peak_lr, *, constant_lr, probe):
  """`create_optimizer`'s lr_groups for a method's requests."""
  groups = []
  if constant_lr is not None:
    groups.append((constant_lr, peak_lr))
  probe_lr = config_lib.value(config, 'probe_learning_rate')
  if probe is not None and probe_lr > 0:
    ratio = scaled_learning_rate(probe_lr, config.batch_size,
                                 config.lr_scaling) / peak_lr
    groups.append((probe, lambda step: schedule(step) * ratio))
  return groups
