"""The optax transformations of our own that the optimizer factory
(optim.py) chains: LARS's trust ratio in one reduction per norm, per-group
learning rates, per-parameter clipping, a group frozen for its first steps
(with its own optimizer state, `trained_after`), and a cosine between two
values (DINO's weight decay).
"""

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[Any], Any]
Mask = Callable[[Any], Any]  # params -> bool pytree


def scale_by_trust_ratio(
    trust_coefficient: float = 0.001) -> optax.GradientTransformation:
  """`optax.scale_by_trust_ratio` (eps=0, no minimum norm), one reduction
  per norm.

  optax takes each norm with `numerics.safe_norm`, which for a correct
  gradient *of the norm* reduces the tensor twice and, in between, writes a
  `where(norm <= 0, 1, x)` copy of it; XLA:CPU materialises that copy, so
  LARS read and wrote every parameter-sized tensor six extra times per step
  (~9% of a ResNet-18 step at batch 16). No gradient is ever taken through
  an optimizer update, and without a minimum norm both give the same values:
  the plain norm, and a ratio of 1 where either norm is 0. The state is
  optax's (empty), so checkpoints do not change.
  """

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError('scale_by_trust_ratio needs the params')

    def scale(update, param):
      param_norm = jnp.linalg.norm(param)
      update_norm = jnp.linalg.norm(update)
      ratio = trust_coefficient * param_norm / update_norm
      zero = jnp.logical_or(param_norm == 0.0, update_norm == 0.0)
      return update * jnp.where(zero, jnp.ones((), param.dtype), ratio)

    return jax.tree.map(scale, updates, params), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def learning_rate_step(
    learning_rate: float | Schedule,
    groups: Sequence[tuple[Callable[[Any], Any], float | Schedule]] = (),
) -> optax.GradientTransformation:
  """`optax.scale_by_learning_rate(learning_rate)`; each of `groups`, a
  (mask_fn, learning rate) pair, scales the leaves its mask marks by its own
  learning rate instead (masks disjoint): SimSiam's predictor at the peak lr
  (main_simsiam.py:193-197, :359-366 @a7bc177), the online probe at its
  own. Without groups the state is optax's, as checkpoints hold it."""
  if not groups:
    return optax.scale_by_learning_rate(learning_rate)

  def rest(params):
    marked = [mask_fn(params) for mask_fn, _ in groups]
    return jax.tree.map(lambda *m: not any(m), *marked)

  return optax.chain(
      optax.masked(optax.scale_by_learning_rate(learning_rate), rest),
      *[optax.masked(optax.scale_by_learning_rate(lr), mask_fn)
        for mask_fn, lr in groups])


def cosine_between(start: float, end: float, total_steps: int) -> Schedule:
  """step -> `start` + (`end` - `start`)(1 - cos(pi t / T)) / 2: `start` at
  step 0, `end` at step T and after (DINO's cosine_scheduler without
  warm-up)."""

  def schedule(step):
    t = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps)
    return end + (start - end) * (1 + jnp.cos(math.pi * t / total_steps)) / 2

  return schedule


def clip_per_parameter(max_norm: float) -> optax.GradientTransformation:
  """Each leaf's gradient scaled to norm `max_norm` when it is longer, on
  its own (DINO's utils.clip_gradients: coefficient max_norm / (norm +
  1e-6), applied when below 1). Stateless."""

  def update_fn(updates, state, params=None):
    del params

    def clip(g):
      coefficient = max_norm / (jnp.linalg.norm(g) + 1e-6)
      return g * jnp.minimum(coefficient, 1.0).astype(g.dtype)

    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


class TrainedAfterState(NamedTuple):
  count: jax.Array  # int32: updates seen so far, frozen ones included
  inner: Any        # the group's own optimizer state


def trained_after(inner: optax.GradientTransformation, mask: Mask,
                  steps: int) -> optax.GradientTransformation:
  """The leaves `mask` marks, updated by `inner` (with a state of their own)
  from update `steps` on; before, their updates are zero and `inner`'s
  state does not move. The other leaves pass through unchanged.

  torch's optimizers skip a parameter whose gradient is None, as DINO's
  frozen last layer's is for its first epoch (utils.py:144-149): its AdamW
  `step` counts only the steps it trained, so its first update has the
  bias correction of step 1. A count shared with the rest would give that
  update the correction of step `steps` + 1 (about 2.7x the step after a
  1,251-step epoch, with betas 0.9 / 0.999). `inner` counts from 0 at
  update `steps`: the factory builds it on its schedules shifted by `steps`
  (`optim.optimizer_from_config`), so the learning rate and weight decay
  are the global step's, as torch's per-iteration `param_group` values.
  """
  masked = optax.masked(inner, mask)

  def init_fn(params):
    return TrainedAfterState(count=jnp.zeros((), jnp.int32),
                             inner=masked.init(params))

  def update_fn(updates, state, params=None):
    frozen = state.count < steps
    new_updates, new_inner = masked.update(updates, state.inner, params)
    marked = mask(updates)
    new_updates = jax.tree.map(
        lambda u, m: jnp.where(frozen, jnp.zeros_like(u), u) if m else u,
        new_updates, marked)
    new_inner = jax.tree.map(lambda old, new: jnp.where(frozen, old, new),
                             state.inner, new_inner)
    return new_updates, TrainedAfterState(
        count=optax.safe_increment(state.count), inner=new_inner)

  return optax.GradientTransformation(init_fn, update_fn)
