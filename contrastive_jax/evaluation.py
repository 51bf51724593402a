"""Passes over an evaluation split: classifier accuracy, encoder features for
the kNN monitor, and the results file.

Every process reads its own shard; per-batch work runs under `shard_map`
over the 'data' axis, and padded rows (mask 0) never count.
"""

import json
import os
import time
from typing import Any, Callable

import flax
import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from contrastive_jax import knn, parallel, pretrained
from contrastive_jax.data import pipeline
from contrastive_jax.report import RESULTS_FILE



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


def _eval_batches(config, source):
  process_count = jax.process_count()
  local_batch_size = config.eval_batch_size // process_count
  ds = pipeline.make_eval_dataset(
      source=source, local_batch_size=local_batch_size,
      view_spec=config.eval_augment, process_index=jax.process_index(),
      process_count=process_count)
  num_batches = pipeline.num_eval_batches(source, local_batch_size,
                                          process_count)
  return pipeline.as_numpy_iterator(ds), num_batches


def evaluate_classifier(state, *, eval_step: Callable, config, mesh,
                        source) -> dict:
  """Top-1/top-5 of a classifier state on `source` (the eval split)."""
  step = jax.jit(jax.shard_map(eval_step, mesh=mesh,
                               in_specs=(P(), P(parallel.DATA_AXIS)),
                               out_specs=P()))
  batches, num_batches = _eval_batches(config, source)
  progress = Progress(f"evaluating on {source.split}", num_batches)
  total = np.zeros(3, np.float64)
  for i, batch in enumerate(batches):
    total += np.asarray(jax.device_get(
        step(state, parallel.global_batch(batch, mesh))), np.float64)
    progress(i + 1)
  hit1, hit5, n = total
  return {"top1": hit1 / max(n, 1), "top5": hit5 / max(n, 1),
          "num_examples": int(n)}


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
  batches, num_batches = _eval_batches(config, source)
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


class KnnMonitor:
  """kNN accuracy of the encoder during pretraining: a bank of train-split
  features (at most knn.bank_size), test-split queries, eval-view images."""

  def __init__(self, config, *, method, mesh, bank_source, query_source):
    self._config, self._method, self._mesh = config, method, mesh
    self._bank_source, self._query_source = bank_source, query_source
    module = pretrained.encoder_module(config)
    self._embed = sharded_feature_fn(
        lambda variables, images: module.apply(variables, images,
                                               train=False), mesh)

  def due(self, step: int, total_steps: int) -> bool:
    every = self._config.knn.every_steps
    return step % every == 0 or step == total_steps

  def __call__(self, state) -> dict:
    config = self._config
    variables = self._method.encoder_variables(
        flax.serialization.to_state_dict(state))
    bank_size = config.knn.bank_size if config.knn.bank_size > 0 else None
    bank, bank_labels = extract_features(
        self._embed, variables, config, self._bank_source, self._mesh,
        max_examples=bank_size)
    queries, query_labels = extract_features(
        self._embed, variables, config, self._query_source, self._mesh)
    labelled = bank_labels >= 0  # e.g. stl10 'unlabelled' stores -1
    accuracy = knn.knn_accuracy(
        queries, query_labels, bank[labelled], bank_labels[labelled],
        num_classes=int(max(bank_labels.max(), query_labels.max()) + 1),
        k=config.knn.k, temperature=config.knn.temperature)
    return {"knn_accuracy": accuracy}


def knn_monitor_wanted(config, *, method, source) -> bool:
  """Whether pretraining runs the kNN monitor: a method with an encoder,
  knn.every_steps > 0, and labelled data (on unlabelled data it says once
  that it is off)."""
  if not method.pretrains_encoder or config.knn.every_steps <= 0:
    return False
  if not source.labelled:
    logging.info("kNN monitor off: dataset %s has no labels",
                 source.dataset)
    return False
  return True


def write_results(workdir: str, results: dict):
  """`<workdir>/eval_results.json`, written by process 0 only."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, RESULTS_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)  # never a half-written file
