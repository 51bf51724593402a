"""What a train step knows of the run beyond its state and batch: the step
counts and the schedules, in one record every method's `train_step` takes.

The loop's step is `state.step`; everything that turns it into an epoch or a
scheduled value lives here, so a method whose hyper-parameters follow the
training (DINO's teacher temperature, warmed up over epochs) reads them
without the loop or the step builder knowing of them.
"""

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

Schedule = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class StepContext:
  """The run as a step sees it (static: bound into the jitted step).

  steps_per_epoch, total_steps: the run's step counts.
  learning_rate: the optimizer's learning-rate schedule (step -> lr), for
    the step's metrics.
  schedules: the optimizer's other scheduled hyper-parameters by name
    (e.g. 'weight_decay' when `config.weight_decay_end` asks for a cosine),
    step -> value.
  """
  steps_per_epoch: int
  total_steps: int
  learning_rate: Schedule
  schedules: Mapping[str, Schedule] = dataclasses.field(default_factory=dict)

  def epoch(self, step) -> jax.Array:
    """The fractional epoch at `step` (step 0 is epoch 0.0)."""
    return jnp.asarray(step, jnp.float32) / self.steps_per_epoch

  def metrics(self, step) -> dict:
    """The scheduled values at `step` for the step's metrics: the learning
    rate and every other schedule."""
    return {"learning_rate": self.learning_rate(step),
            **{name: fn(step) for name, fn in self.schedules.items()}}


def constant_context(learning_rate: float = 1.0) -> StepContext:
  """A context for a step called on its own (tests, benchmarks): one epoch
  of one step, a constant learning rate."""
  return StepContext(steps_per_epoch=1, total_steps=1,
                     learning_rate=lambda _: learning_rate)


def dropout_rngs(state_rng: jax.Array, step, *, axis_name: str | None
                 ) -> dict:
  """The `rngs` of a training `model.apply` with dropout or drop-path: a
  key per step (`state.rng` folded with it) and per device (folded with
  its index on `axis_name`), so that each device drops other units, and
  a resume draws the same masks again."""
  key = jax.random.fold_in(state_rng, step)
  if axis_name is not None:
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  dropout, drop_path = jax.random.split(key)
  return {"dropout": dropout, "drop_path": drop_path}
