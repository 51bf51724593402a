"""A parameter EMA as an optax transformation: MoCo's key encoder, BYOL's
target network.

`ema_params(momentum)` passes the updates through unchanged and keeps in its
state a `target` copy of the parameters, moved after every update as

    target <- m * target + (1 - m) * (params + updates)

i.e. towards the parameters *after* this step's update. optax hands
`update` the parameters from before the update, so the new ones are rebuilt
here from `params + updates`; that is why it must come last in the chain,
once the updates are final:

    tx = optax.chain(optimizer, ema_params(0.999))
    target = ema.target_params(opt_state)

Being optimizer state, the target is checkpointed with it and never receives
a gradient. (`optax.ema` is an EMA of the *updates*, not of the parameters.)
"""

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from contrastive_jax.errors import ConfigError

Momentum = float | Callable[[jax.Array], jax.Array]
MOMENTUM_SCHEDULES = ("constant", "cosine")


class EmaParamsState(NamedTuple):
  count: jax.Array     # int32: updates seen so far; the schedule's step
  momentum: jax.Array  # float32: the momentum of the latest update (logging)
  target: Any          # the EMA of the parameters


def everything(params):
  """The EMA selector of the whole parameter tree (MoCo's key encoder)."""
  return params


def ema_params(momentum: Momentum,
               select: Callable[[Any], Any] = everything
               ) -> optax.GradientTransformation:
  """EMA of the post-update parameters; `momentum` is m in [0, 1] or a
  schedule step -> m (the step counts this transformation's updates, from 0).
  `select(params)` is the part of the parameters the EMA follows (BYOL's
  target: the encoder and projector, not the predictor); by default all.

  The target starts as a copy of the parameters (MoCo initialises its key
  encoder from the query encoder).
  """
  schedule = momentum if callable(momentum) else (lambda _: momentum)

  def init_fn(params):
    return EmaParamsState(
        count=jnp.zeros((), jnp.int32),
        momentum=jnp.asarray(schedule(0), jnp.float32),
        # A copy, not an alias: the params buffers may be donated.
        target=jax.tree.map(jnp.copy, select(params)))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("ema_params needs the params: call "
                       "tx.update(updates, opt_state, params)")
    m = jnp.asarray(schedule(state.count), jnp.float32)
    new_params = select(optax.apply_updates(params, updates))
    target = optax.incremental_update(new_params, state.target,
                                      step_size=1.0 - m)
    return updates, EmaParamsState(
        count=optax.safe_increment(state.count), momentum=m, target=target)

  return optax.GradientTransformation(init_fn, update_fn)


def cosine_momentum(base: float, total_steps: int) -> Callable:
  """m(t) = 1 - (1 - base) * (cos(pi * t / T) + 1) / 2: `base` at step 0,
  rising to 1 at step T (BYOL, MoCo v3); held at 1 after T."""
  if total_steps <= 0:
    raise ConfigError(f"num_train_steps must come to a positive number of "
                      f"steps; got {total_steps}")

  def schedule(step):
    t = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps)
    return 1.0 - (1.0 - base) * (jnp.cos(math.pi * t / total_steps) + 1) / 2

  return schedule


def check_momentum(base, kind):
  """`ema_momentum` (base) in [0, 1] and a known `ema_momentum_schedule`
  (kind): what `config.checks.validate` asks of every method whose
  `Method.ema` asks for an EMA target, and what `momentum_schedule` needs."""
  if (isinstance(base, bool) or not isinstance(base, (int, float))
      or not 0 <= base <= 1):
    raise ConfigError(
        f"config.ema_momentum={base!r} is invalid: the EMA target's "
        "momentum must be a number in [0, 1]")
  if kind not in MOMENTUM_SCHEDULES:
    raise ConfigError(
        f"config.ema_momentum_schedule={kind!r} is invalid: must be one of "
        f"{', '.join(MOMENTUM_SCHEDULES)}")


def momentum_schedule(base: float, kind: str, total_steps: int) -> Momentum:
  """The EMA momentum from config fields `ema_momentum` (base) and
  `ema_momentum_schedule` (kind)."""
  check_momentum(base, kind)
  if kind == "constant":
    return float(base)
  return cosine_momentum(float(base), total_steps)


def _ema_states(opt_state) -> list[EmaParamsState]:
  is_ema = lambda x: isinstance(x, EmaParamsState)
  return [s for s in jax.tree.leaves(opt_state, is_leaf=is_ema) if is_ema(s)]


def ema_state(opt_state) -> EmaParamsState:
  """The one `EmaParamsState` inside a (chained) optimizer state. Where
  the optimizer factory made it (`optim.optimizer_from_config`), it is the
  last element of the outer chain: `state_dict_target` reads it from
  there in a checkpoint."""
  states = _ema_states(opt_state)
  if len(states) != 1:
    raise ValueError(f"expected one ema_params state in the optimizer "
                     f"state, found {len(states)}")
  return states[0]


def target_params(opt_state) -> Any:
  """The EMA target parameters held in a (chained) optimizer state."""
  return ema_state(opt_state).target


def has_ema_state(opt_state) -> bool:
  """Whether a (chained) optimizer state holds exactly one EMA."""
  return len(_ema_states(opt_state)) == 1


# The EMA target's path in a checkpointed state (nested dicts, as Orbax
# restores a state without its structure): the optimizer factory chains the
# EMA last, so it is the outer chain's last element, and its `target` field.
TARGET_PATH = ("opt_state", "<last>", "target")


def state_dict_target(state: dict) -> Any:
  """The EMA target parameters of a checkpointed state (nested dicts) at
  `TARGET_PATH`; ValueError when the state has none there (a method
  without an EMA target)."""
  opt_state = state.get("opt_state")
  if isinstance(opt_state, dict) and opt_state and all(
      k.isdigit() for k in opt_state):
    last = opt_state[str(max(int(k) for k in opt_state))]
  elif isinstance(opt_state, (tuple, list)) and opt_state:
    last = opt_state[-1]
    last = last._asdict() if hasattr(last, "_asdict") else last
  else:
    last = None
  if not isinstance(last, dict) or "target" not in last:
    raise ValueError("the state has no EMA target at opt_state/<last>/target"
                     " (the optimizer factory chains the EMA last)")
  return last["target"]
