"""Command line: `python -m contrastive_jax.main --config=configs/simclr.py
--workdir=DIR`.

Parses flags, keeps TensorFlow (our tf.data engine) off the accelerators,
joins a multi-process JAX job when launched as one, and runs the loop. Bad
input ends with one line on stderr and exit status 2.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from contrastive_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints "
                               "and metrics; an existing run is resumed.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process "
    "runs not on Cloud TPU (which needs no flags).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's index in the run.")
config_flags.DEFINE_config_file("config", None, "Config file (with an "
                                "optional :variant).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _hide_accelerators_from_tensorflow():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Otherwise TF reserves GPU memory that JAX needs.
  tf.config.set_visible_devices([], "GPU")


def _multi_process_requested() -> bool:
  if _COORDINATOR.value:
    return True
  # Cloud TPU pod slices and the usual cluster launchers describe the job in
  # the environment; jax.distributed.initialize() reads it with no arguments.
  workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return ("," in workers
          or int(os.environ.get("SLURM_NTASKS", "1")) > 1
          or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def _initialize_distributed():
  import jax  # pylint: disable=g-import-not-at-top
  if not _multi_process_requested():
    return
  if jax.config.jax_platforms in (None, "", "cpu") and not os.environ.get(
      "TPU_WORKER_HOSTNAMES"):
    # Cross-process collectives on CPU need gloo (harmless on GPU/TPU, where
    # the device's own collectives are used).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  else:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  _hide_accelerators_from_tensorflow()
  _initialize_distributed()
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  try:
    train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  except UserError as e:
    logging.flush()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
