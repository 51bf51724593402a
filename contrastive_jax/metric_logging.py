"""Where metrics go: clu writers (TensorBoard + log) and a JSON-lines file.

Only process 0 writes files; other processes only log. Step metrics are
reduced over a logging window with a clu `metrics.Collection`.
"""

import json
import os
from typing import Any, Mapping, Sequence

import flax
import jax
import numpy as np
from clu import metric_writers, metrics

METRICS_FILE = "metrics.jsonl"


class JsonLinesWriter(metric_writers.interface.MetricWriter):
  """Appends one JSON object per `write_scalars` call: {"step": s, ...}."""

  def __init__(self, path: str):
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step)}
    row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=True),
      JsonLinesWriter(os.path.join(workdir, METRICS_FILE)),
  ])


@flax.struct.dataclass
class _Sum(metrics.Average):
  """A count of events over the window (e.g. skipped steps), not a mean."""

  def compute(self):
    return self.total


def _metric_for(name: str):
  # A schedule value is a point, not a quantity to average over a window.
  if name.endswith("learning_rate"):
    return metrics.LastValue.from_output(name)
  # Names ending in "_steps" count steps (guards.NONFINITE).
  if name.endswith("_steps"):
    return _Sum.from_output(name)
  return metrics.Average.from_output(name)


def summarize(step_metrics: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Reduces the metrics of several steps into one scalar per name."""
  step_metrics = jax.device_get(list(step_metrics))
  names = sorted(step_metrics[0])
  collection_cls = metrics.Collection.create(
      **{name: _metric_for(name) for name in names})
  total = None
  for m in step_metrics:
    one = collection_cls.single_from_model_output(
        **{k: np.asarray(v) for k, v in m.items()})
    total = one if total is None else total.merge(one)
  return {k: float(v) for k, v in total.compute().items()}
