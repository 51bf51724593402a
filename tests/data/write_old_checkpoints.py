"""Writes tests/data/checkpoints_v1/: one tiny checkpoint per method, as the
code before the Method interface was opened (commit c0b3fce) wrote them,
for `tests/test_old_checkpoints.py` to restore with the code of today.

  git worktree add /tmp/old c0b3fce && cd /tmp/old && \
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python /path/to/tests/data/write_old_checkpoints.py OUT

Each method's tiny test config (8 px, width 1) trains 2 steps on 2 devices
and saves step 2; `values.json` holds every state leaf's sum of squares
and shape, keyed by its path, to compare the restored state with.
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.getcwd())

import jax  # noqa: E402
import numpy as np  # noqa: E402

from contrastive_jax import train  # noqa: E402
from tests import (test_byol, test_moco, test_moco_v3,  # noqa: E402
                   test_simclr_step, test_simsiam)

COMMON = dict(num_train_steps=2, warmup_epochs=0.0, preview_images=0,
              checkpoint_every_steps=2, log_every_steps=1,
              model="tiny_resnet", width_multiplier=1)
CONFIGS = {
    "simclr": lambda: _updated(test_simclr_step.tiny_config(), COMMON),
    "moco": lambda: test_moco.tiny_config(**COMMON),
    "byol": lambda: test_byol.tiny_config(
        ema_momentum_schedule="cosine", **COMMON),
    "simsiam": lambda: test_simsiam.tiny_config(**COMMON),
    "moco_v3": lambda: test_moco_v3.tiny_config(
        ema_momentum_schedule="cosine", **COMMON),
}


def _updated(config, fields):
  config.update(fields)
  return config


def main(out):
  for name, make in CONFIGS.items():
    config = make()
    config.knn.every_steps = 0
    config.health.every_steps = 0
    workdir = os.path.join(out, name)
    shutil.rmtree(workdir, ignore_errors=True)
    state = jax.device_get(train.train_and_evaluate(
        config, workdir, devices=jax.devices()[:2]))
    values = {jax.tree_util.keystr(path): [
        float(np.sum(np.square(np.asarray(leaf, np.float64)))),
        list(np.shape(leaf))]
              for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
    # Only the checkpoint travels: logs and events are not what is tested.
    for entry in os.listdir(workdir):
      if entry != "checkpoints":
        path = os.path.join(workdir, entry)
        (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
    with open(os.path.join(workdir, "values.json"), "w") as f:
      json.dump(values, f, indent=0, sort_keys=True)


if __name__ == "__main__":
  main(sys.argv[1])
