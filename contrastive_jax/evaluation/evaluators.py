"""The evaluators of a run: a list the loop asks, not branches in it.

Each evaluator (as big_vision's `config.evals`) has its own cadence and
returns scalars for TensorBoard and metrics.jsonl:

  due(step, total_steps) -> bool   asked after every step;
  run(state, step) -> dict         the scalars of that step;
  at_end: bool                     run once more after the last step (a
                                   classifier's final evaluation), also
                                   when a finished run is started again.

`wanted` picks the entries the config, the method and the data allow (never
by a method's or dataset's name) and `create` makes them. The entries today:
  * kNN monitor (knn_monitor.py): pretraining, labelled data;
  * health monitor (health_monitor.py): pretraining, any data;
  * classifier evaluation (classifier_eval.py): a classifier's accuracy
    (and kNN) on the eval split, its results file.
"""

import dataclasses
from typing import Any, Callable, Protocol

from contrastive_jax.evaluation import (classifier_eval, health_monitor,
                                        knn_monitor)


class Evaluator(Protocol):
  name: str
  at_end: bool

  def due(self, step: int, total_steps: int) -> bool:
    ...

  def run(self, state, step: int) -> dict:
    ...


@dataclasses.dataclass(frozen=True)
class Context:
  """What an evaluator may be built from: resolved once by the loop."""
  config: Any
  method: Any
  model: Any
  mesh: Any
  workdir: str
  train_source: Any
  eval_source: Any = None


@dataclasses.dataclass(frozen=True)
class Entry:
  """One kind of evaluator: its class (whose `name` and `at_end` are the
  entry's, said once), whether the run wants it, whether it reads the eval
  split, and how to make it."""
  kind: type
  wanted: Callable[..., bool]      # (config, *, method, source) -> bool
  reads_eval_split: bool
  create: Callable[[Context], Evaluator]

  @property
  def name(self) -> str:
    return self.kind.name

  @property
  def at_end(self) -> bool:
    """Known before the evaluator is made: a finished run started again
    asks it to decide whether there is anything left to do."""
    return self.kind.at_end


ENTRIES = (
    Entry(knn_monitor.KnnMonitor, knn_monitor.wanted, True,
          lambda c: knn_monitor.KnnMonitor(
              c.config, method=c.method, mesh=c.mesh,
              bank_source=c.train_source, query_source=c.eval_source)),
    Entry(health_monitor.HealthMonitor, health_monitor.wanted, False,
          lambda c: health_monitor.HealthMonitor(
              c.config, method=c.method, mesh=c.mesh,
              source=c.train_source)),
    Entry(classifier_eval.ClassifierEvaluation, classifier_eval.wanted, True,
          lambda c: classifier_eval.ClassifierEvaluation(
              c.config, method=c.method, model=c.model, mesh=c.mesh,
              workdir=c.workdir, train_source=c.train_source,
              eval_source=c.eval_source)),
)


def wanted(config, *, method, source) -> list[Entry]:
  """The entries this run wants (each says once when it is off)."""
  return [e for e in ENTRIES
          if e.wanted(config, method=method, source=source)]


def any_at_end(entries: list[Entry]) -> bool:
  """Whether any entry runs once more after the last step (a finished run
  started again then has something to do)."""
  return any(e.at_end for e in entries)


def reads_eval_split(entries: list[Entry]) -> bool:
  return any(e.reads_eval_split for e in entries)


def create(entries: list[Entry], context: Context) -> list[Evaluator]:
  return [e.create(context) for e in entries]


def run_due(evaluators, state, step: int, total_steps: int, writer):
  """Runs the evaluators due at `step`; writes their scalars."""
  for evaluator in evaluators:
    if not evaluator.at_end and evaluator.due(step, total_steps):
      scalars = evaluator.run(state, step)
      if scalars:
        writer.write_scalars(step, scalars)


def run_at_end(evaluators, state, step: int, writer):
  """Runs the evaluators that close a finished run."""
  for evaluator in evaluators:
    if evaluator.at_end:
      scalars = evaluator.run(state, step)
      if scalars:
        writer.write_scalars(step, scalars)
