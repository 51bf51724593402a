"""Passes over an evaluation split, shared by the evaluations: the batches
of one split (eval view, padded to full batches), encoder features of every
example, and progress logging.

Every process reads its own shard; per-batch work runs under `shard_map`
over the 'data' axis, and padded rows (mask 0) never count.
"""

import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.data import pipeline


class Progress:
  """Logs 'what: i/n batches (p%)' at most every `every_secs`."""

  def __init__(self, what: str, total: int, every_secs: float = 10.0):
    self._what, self._total, self._every = what, total, every_secs
    self._start = self._last = time.monotonic()

  def __call__(self, done: int):
    now = time.monotonic()
    if now - self._last >= self._every or done == self._total:
      self._last = now
      rate = done / max(now - self._start, 1e-9)
      logging.info("%s: %d/%d batches (%.0f%%), %.1f batches/s", self._what,
                   done, self._total, 100.0 * done / max(self._total, 1),
                   rate)


def eval_batches(config, source):
  process_count = jax.process_count()
  local_batch_size = config.eval_batch_size // process_count
  ds = pipeline.make_eval_dataset(
      source=source, local_batch_size=local_batch_size,
      view_spec=config.eval_augment, process_index=jax.process_index(),
      process_count=process_count)
  num_batches = pipeline.num_eval_batches(source, local_batch_size,
                                          process_count)
  return pipeline.as_numpy_iterator(ds), num_batches


def sharded_feature_fn(apply_fn: Callable, mesh) -> Callable:
  """jit(shard_map(apply_fn(variables, images) -> features)) - build once,
  call often (each new wrapper would compile again)."""
  return jax.jit(jax.shard_map(
      apply_fn, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
      out_specs=P(parallel.DATA_AXIS)))


def extract_features(feature_fn: Callable, variables: Any, config, source,
                     mesh, max_examples: int | None = None):
  """(features [N, d], labels [N]) of `source` on every process, in order.

  `feature_fn` comes from `sharded_feature_fn`.
  """
  batches, num_batches = eval_batches(config, source)
  progress = Progress(f"features of {source.split}", num_batches)
  features, labels = [], []
  seen = 0
  for i, batch in enumerate(batches):
    global_batch = parallel.global_batch(batch, mesh)
    out = feature_fn(variables, global_batch["image"])
    # Every process needs the whole bank: gather the global arrays.
    f, y, m = (np.asarray(multihost_utils.process_allgather(x, tiled=True))
               for x in (out, global_batch["label"], global_batch["mask"]))
    keep = m > 0
    features.append(f[keep])
    labels.append(y[keep])
    seen += int(keep.sum())
    progress(i + 1)
    if max_examples and seen >= max_examples:
      break
  features = np.concatenate(features)[:max_examples or None]
  labels = np.concatenate(labels)[:max_examples or None]
  return features, labels
