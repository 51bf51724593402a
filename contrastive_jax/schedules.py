"""Learning-rate schedules: the batch-size scaling rule and the warmup +
cosine / step / constant schedules the optimizer factory (optim.py) builds
from a config."""

import math
from typing import Any, Callable, Sequence

import optax

from contrastive_jax.errors import ConfigError

Schedule = Callable[[Any], Any]
LR_SCALING_RULES = ('linear', 'sqrt', 'none')
LR_SCHEDULES = ('cosine', 'step', 'constant')


def _check_choice(field: str, value, allowed):
  if value not in allowed:
    raise ConfigError(
        f'{field} must be one of {", ".join(allowed)}; got {value!r}')


def _check_decay_factor(factor):
  if (isinstance(factor, bool) or not isinstance(factor, (int, float))
      or not factor >= 0):
    raise ConfigError(f'lr_decay_factor must be >= 0; got {factor!r}')


def check_min_learning_rate(value, schedule: str, peak_lr: float):
  """`min_learning_rate`, the cosine's floor: a number >= 0, 0 unless the
  schedule is 'cosine', and not above `peak_lr` (the scaled peak), where
  the "decay" would rise from the peak to the floor instead."""
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not value >= 0):
    raise ConfigError(f'config.min_learning_rate={value!r} is invalid: must '
                      'be a number >= 0')
  if value and schedule != 'cosine':
    raise ConfigError(f'config.min_learning_rate={value!r} is the cosine '
                      f"schedule's floor; lr_schedule={schedule!r} needs 0")
  if value > peak_lr:
    raise ConfigError(
        f'config.min_learning_rate={value!r} is above the peak learning rate '
        f'{peak_lr!r} (learning_rate scaled for the batch size): the cosine '
        f'would rise to it; use a floor <= {peak_lr!r}')


def scaled_learning_rate(base_lr: float, batch_size: int, rule: str) -> float:
  """Peak learning rate for a global batch size.

  'linear': base * B / 256 (Goyal et al.; SimCLR 0.3 * B / 256).
  'sqrt':   base * sqrt(B) (SimCLR's small-batch / long-run rule, 0.075).
  'none':   base, whatever the batch (MoCo's 0.03 at B=256).
  """
  if batch_size <= 0:
    raise ConfigError(
        f'batch_size must be a positive integer; got {batch_size}')
  if rule == 'linear':
    return base_lr * batch_size / 256
  if rule == 'sqrt':
    return base_lr * math.sqrt(batch_size)
  _check_choice('lr_scaling', rule, LR_SCALING_RULES)
  return base_lr  # 'none'


def learning_rate_schedule(
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    schedule: str = 'cosine',
    decay_boundaries: Sequence[int] = (),
    decay_factor: float = 0.1,
    min_learning_rate: float = 0.0,
) -> Schedule:
  """Step -> learning rate, with a linear warmup from 0 to `peak_lr`.

  'cosine':   cosine decay to `min_learning_rate` at `total_steps` (SimCLR,
              MoCo v2: 0; DINO: 1e-6, main_dino.py:101, utils.py:187-198).
  'step':     multiply by `decay_factor` at each of `decay_boundaries`
              (absolute steps; MoCo v1: x0.1 at epochs 120 and 160).
  'constant': stay at `peak_lr`.
  """
  _check_choice('lr_schedule', schedule, LR_SCHEDULES)
  if total_steps <= 0:
    raise ConfigError(
        f'num_train_steps must come to a positive number of steps; got '
        f'{total_steps}')
  if not 0 <= warmup_steps < total_steps:
    raise ConfigError(
        f'warmup_epochs must be >= 0 and shorter than the run; got '
        f'{warmup_steps} warmup steps of {total_steps}')

  check_min_learning_rate(min_learning_rate, schedule, peak_lr)
  if schedule == 'cosine':
    if warmup_steps == 0:
      # optax's warmup schedule logs a warning for a zero-length warmup.
      if not min_learning_rate:
        return optax.cosine_decay_schedule(peak_lr, decay_steps=total_steps)
      return optax.cosine_decay_schedule(
          peak_lr, decay_steps=total_steps, alpha=min_learning_rate / peak_lr)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps,
        decay_steps=total_steps, end_value=float(min_learning_rate))

  if schedule == 'constant':
    after_warmup = optax.constant_schedule(peak_lr)
  else:
    boundaries = [int(b) for b in decay_boundaries]
    if any(b <= warmup_steps for b in boundaries) or any(
        a >= b for a, b in zip(boundaries, boundaries[1:])):
      raise ConfigError(
          f'lr_decay_epochs must be strictly increasing and after the warmup; '
          f'got steps {boundaries} with {warmup_steps} warmup steps')
    _check_decay_factor(decay_factor)
    # join_schedules restarts the count at the warmup boundary, so the decay
    # boundaries are shifted to stay absolute.
    after_warmup = optax.piecewise_constant_schedule(
        peak_lr, {b - warmup_steps: decay_factor for b in boundaries})

  if warmup_steps == 0:
    return after_warmup
  warmup = optax.linear_schedule(0.0, peak_lr, transition_steps=warmup_steps)
  return optax.join_schedules([warmup, after_warmup], [warmup_steps])
