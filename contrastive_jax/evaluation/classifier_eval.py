"""A classifier's accuracy on the eval split, and the results file it
leaves in the workdir (read by `python -m contrastive_jax.evaluation.report`).
An evaluator of the run's list (evaluators.py) that runs once, at the end.
"""

import functools
import json
import os
from typing import Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.config import lib as config_lib
from contrastive_jax.data import label_subset
from contrastive_jax.evaluation import features, knn_monitor
from contrastive_jax.evaluation.report import RESULTS_FILE


def wanted(config, *, method, source) -> bool:
  del config, source
  return method.evaluates


class ClassifierEvaluation:
  """Top-1/top-5 of the classifier on the eval split and, for a method that
  exposes the features it classifies (`Method.eval_features`) with
  `config.knn_eval`, the kNN top-1 of those features (train-split bank,
  `config.knn`'s k, temperature and bank size): both in TensorBoard and in
  `<workdir>/eval_results.json`."""
  name = "classifier"
  at_end = True

  def __init__(self, config, *, method, model, mesh, workdir, train_source,
               eval_source):
    self._config, self._method, self._model = config, method, model
    self._mesh, self._workdir = mesh, workdir
    self._train_source, self._eval_source = train_source, eval_source

  def due(self, step: int, total_steps: int) -> bool:
    return step == total_steps

  def run(self, state, step: int) -> dict:
    config, method = self._config, self._method
    results = evaluate_classifier(
        state, config=config, mesh=self._mesh, source=self._eval_source,
        eval_step=functools.partial(method.eval_step, model=self._model,
                                    config=config,
                                    axis_name=parallel.DATA_AXIS))
    if method.eval_features is not None and config_lib.value(config, "knn_eval"):
      results["knn_top1"] = self._knn(state)
    scalars = {f"eval/{k}": v for k, v in results.items()}
    results.update(
        step=step, split=config.eval_split,
        dataset=label_subset.eval_dataset(config),
        pretrained=config_lib.value(config, "pretrained"),
        checkpoint_step=int(jax.device_get(state.extra["pretrained_step"])))
    write_results(self._workdir, results)
    logging.info("%s on %s: top-1 %.4f, top-5 %.4f (%d examples)%s",
                 config.method, config.eval_split, results["top1"],
                 results["top5"], results["num_examples"],
                 f", kNN top-1 {results['knn_top1']:.4f}"
                 if "knn_top1" in results else "")
    return scalars

  def _knn(self, state) -> float:
    config, method, model = self._config, self._method, self._model
    embed = features.sharded_feature_fn(
        lambda s, images: method.eval_features(s, images, model=model,
                                               config=config), self._mesh)
    return knn_monitor.knn_top1(embed, state, config, mesh=self._mesh,
                                bank_source=self._train_source,
                                query_source=self._eval_source)


def evaluate_classifier(state, *, eval_step: Callable, config, mesh,
                        source) -> dict:
  """Top-1/top-5 of a classifier state on `source` (the eval split)."""
  step = jax.jit(jax.shard_map(eval_step, mesh=mesh,
                               in_specs=(P(), P(parallel.DATA_AXIS)),
                               out_specs=P()))
  batches, num_batches = features.eval_batches(config, source)
  progress = features.Progress(f"evaluating on {source.split}", num_batches)
  total = np.zeros(3, np.float64)
  for i, batch in enumerate(batches):
    total += np.asarray(jax.device_get(
        step(state, parallel.global_batch(batch, mesh))), np.float64)
    progress(i + 1)
  hit1, hit5, n = total
  return {"top1": hit1 / max(n, 1), "top5": hit5 / max(n, 1),
          "num_examples": int(n)}


def write_results(workdir: str, results: dict):
  """`<workdir>/eval_results.json`, written by process 0 only."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, RESULTS_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)  # never a half-written file
