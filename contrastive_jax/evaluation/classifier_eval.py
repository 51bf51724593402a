"""A classifier's accuracy on the eval split, and the results file it
leaves in the workdir (read by `python -m contrastive_jax.evaluation.report`).
"""

import json
import os
from typing import Callable

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from contrastive_jax import parallel
from contrastive_jax.evaluation import features
from contrastive_jax.evaluation.report import RESULTS_FILE


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
