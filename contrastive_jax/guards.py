"""The numerical guard: a step whose loss or gradient is not finite changes
nothing but the step counter, and too many such steps in a row stop the run.

Why the step counter still advances: the input pipeline is a pure function of
the step (batch k is consumed by step k), so a skipped update must still
consume its batch; otherwise a resumed run would pair steps with different
batches than the run it resumes. The RNG is folded with the step, so it moves
on too, exactly as in a run where that update was applied.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax.errors import UserError

NONFINITE = "nonfinite_steps"


class NonFiniteError(UserError):
  """Too many consecutive non-finite steps: the run cannot go on."""


def skip_nonfinite(per_device_step: Callable, *,
                   axis_name: str | None) -> Callable:
  """Wraps a per-device `step(state, batch) -> (state, metrics)`.

  The step's metrics must hold the global-batch 'loss' and 'grad_norm'; every
  metric named '*grad_norm' is checked (a non-finite gradient anywhere makes
  its norm non-finite, so the norms must together cover all gradients, e.g.
  'grad_norm' and the online probe's 'probe_grad_norm'). The verdict is
  agreed over `axis_name` so that the replicated state stays replicated.
  Adds metric NONFINITE: 1.0 for a skipped step, else 0.0.
  """

  def step(state, batch):
    new_state, metrics = per_device_step(state, batch)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(
        metrics["grad_norm"])
    for name, value in metrics.items():
      if name.endswith("grad_norm"):
        finite &= jnp.isfinite(value)
    if axis_name is not None:
      finite = jax.lax.pmin(finite.astype(jnp.int32), axis_name) > 0
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                        new_state, state)
    kept = kept.replace(step=new_state.step)
    metrics = dict(metrics)
    metrics[NONFINITE] = 1.0 - finite.astype(jnp.float32)
    return kept, metrics

  return step


class ConsecutiveNonFinite:
  """Counts consecutive skipped steps from the step metrics.

  `observe` reads the flag of the PREVIOUS step, whose value is ready or
  nearly so while the current step runs: checking costs no pipeline stall.
  `flush` reads the last one (call it before a final save).
  """

  def __init__(self, limit: int):
    self._limit = limit
    self._streak = 0
    self._pending = None  # (step, device flag)

  def observe(self, step: int, metrics: dict):
    previous, self._pending = self._pending, (step, metrics[NONFINITE])
    if previous is not None:
      self._count(*previous)

  def flush(self):
    if self._pending is not None:
      self._count(*self._pending)
      self._pending = None

  def _count(self, step, flag):
    if float(np.asarray(jax.device_get(flag))) > 0:
      self._streak += 1
    else:
      self._streak = 0
    if self._streak > self._limit:
      raise NonFiniteError(
          f"{self._streak} consecutive steps up to step {step} had a "
          f"non-finite loss or gradient (config.max_consecutive_nonfinite="
          f"{self._limit}); their updates were skipped and the run stops. "
          "The checkpoints in the workdir are from before or during the "
          "streak and hold finite parameters; lower the learning rate or "
          "check the data")
