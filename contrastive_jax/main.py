"""Command line: `python -m contrastive_jax.main --config=configs/simclr.py
--workdir=DIR`.

Parses flags, keeps TensorFlow (our tf.data engine) off the accelerators,
joins a multi-process JAX job when launched as one, and runs the loop. Bad
input ends with one line on stderr and exit status 2.
"""

import dataclasses
import logging as logging_std
import os
from typing import Any

# Before TensorFlow or JAX load: keep their C++ start-up chatter out of the log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from contrastive_jax import cli  # noqa: E402
from contrastive_jax.errors import UserError  # noqa: E402


@dataclasses.dataclass(frozen=True)
class _Flags:
  config: Any
  workdir: Any
  coordinator_address: Any
  num_processes: Any
  process_id: Any
  distributed: Any
  argv: list[str]


def _define(fv, argv) -> _Flags:
  workdir = flags.DEFINE_string(
      "workdir", None, "Directory for checkpoints and metrics; an existing "
      "run is resumed.", flag_values=fv)
  coordinator = flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0, for "
      "multi-process runs not on Cloud TPU (which needs no flags).",
      flag_values=fv)
  num_processes = flags.DEFINE_integer(
      "num_processes", None, "Processes in a multi-process run.",
      flag_values=fv)
  process_id = flags.DEFINE_integer(
      "process_id", None, "This process's index in the run.", flag_values=fv)
  distributed = flags.DEFINE_enum(
      "distributed", "auto", ["auto", "true", "false"],
      "Join a multi-process JAX job with jax.distributed.initialize(): "
      "'auto' when --coordinator_address is given or SLURM / Open MPI / GKE "
      "TPU variables describe one; 'true' always (Cloud TPU VM pod slices, "
      "whose workers JAX finds through the metadata server; launch/tpu_vm.py "
      "passes it); 'false' never.", flag_values=fv)
  config = config_flags.DEFINE_config_file(
      "config", None, "Config file (with an optional :variant).",
      lock_config=True, flag_values=fv, sys_argv=argv)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)
  return _Flags(config=config, workdir=workdir,
                coordinator_address=coordinator, num_processes=num_processes,
                process_id=process_id, distributed=distributed, argv=argv)


def _hide_accelerators_from_tensorflow():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Otherwise TF reserves GPU memory that JAX needs.
  tf.config.set_visible_devices([], "GPU")


def _multi_process_requested(f: _Flags) -> bool:
  if f.distributed.value != "auto":
    return f.distributed.value == "true"
  if f.coordinator_address.value:
    return True
  # GKE TPU slices and the usual cluster launchers describe the job in the
  # environment; jax.distributed.initialize() reads it with no arguments.
  workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return ("," in workers
          or int(os.environ.get("SLURM_NTASKS", "1")) > 1
          or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def _initialize_distributed(f: _Flags):
  import jax  # pylint: disable=g-import-not-at-top
  if not _multi_process_requested(f):
    return
  if jax.config.jax_platforms in (None, "", "cpu") and not os.environ.get(
      "TPU_WORKER_HOSTNAMES"):
    # Cross-process collectives on CPU need gloo (harmless on GPU/TPU, where
    # the device's own collectives are used).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if f.coordinator_address.value:
    jax.distributed.initialize(coordinator_address=f.coordinator_address.value,
                               num_processes=f.num_processes.value,
                               process_id=f.process_id.value)
  else:
    jax.distributed.initialize()


class _QuietLibraries(logging_std.Filter):
  """Drops INFO records from Orbax (dozens per checkpoint save) and JAX's
  backend probing ("Unable to initialize backend 'tpu'", printed before
  the one `error:` line of every run on bad input); warnings and errors
  still pass."""

  def filter(self, record):
    return (record.levelno > logging_std.INFO
            or ("/orbax/" not in record.pathname
                and not record.pathname.endswith("xla_bridge.py")))


def train_or_user_error(config, workdir: str, **kwargs):
  """`train.train_and_evaluate`, with a disk that fills up mid-run (metrics,
  TensorBoard events, anything but a checkpoint, which reports its own)
  turned into a UserError: the run resumes from its newest checkpoint once
  there is space."""
  from contrastive_jax import checkpointing, train  # pylint: disable=g-import-not-at-top
  try:
    return train.train_and_evaluate(config, workdir, **kwargs)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if not checkpointing.is_disk_full(e):
      raise
    raise UserError(
        f"{checkpointing.disk_full_reason(e)} while training in {workdir} "
        f"({cli.summary(e)}); free some space and run the same command again: "
        "it resumes from the newest checkpoint") from e


def _body(f: _Flags, args: list[str]):
  del args
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = cli.read_config(f.config, f.argv)
  _hide_accelerators_from_tensorflow()
  _initialize_distributed(f)
  train_or_user_error(config, f.workdir.value)


TOOL = cli.Tool(
    usage="python -m contrastive_jax.main --config=CONFIG[:VARIANT] "
    "--workdir=DIR [--config.FIELD=VALUE ...]",
    define=_define, body=_body, log_info=True)


run, main = cli.entry_points(TOOL)


if __name__ == "__main__":
  main()
