"""Command line: `python -m contrastive_jax.main --config=configs/simclr.py
--workdir=DIR`.

Parses flags, keeps TensorFlow (our tf.data engine) off the accelerators,
joins a multi-process JAX job when launched as one, and runs the loop. Bad
input ends with one line on stderr and exit status 2.
"""

import ast
import logging as logging_std
import os
import re
import sys

# Before TensorFlow or JAX load: keep their C++ start-up chatter out of the log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
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
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "true", "false"],
    "Join a multi-process JAX job with jax.distributed.initialize(): 'auto' "
    "when --coordinator_address is given or SLURM / Open MPI / GKE TPU "
    "variables describe one; 'true' always (Cloud TPU VM pod slices, whose "
    "workers JAX finds through the metadata server; launch/tpu_vm.py passes "
    "it); 'false' never.")
config_flags.DEFINE_config_file("config", None, "Config file (with an "
                                "optional :variant).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _hide_accelerators_from_tensorflow():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Otherwise TF reserves GPU memory that JAX needs.
  tf.config.set_visible_devices([], "GPU")


def _multi_process_requested() -> bool:
  if _DISTRIBUTED.value != "auto":
    return _DISTRIBUTED.value == "true"
  if _COORDINATOR.value:
    return True
  # GKE TPU slices and the usual cluster launchers describe the job in the
  # environment; jax.distributed.initialize() reads it with no arguments.
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


def _exit_with_error(message: str):
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _summary(error: BaseException) -> str:
  """One line for an error raised while reading the config.

  Config-file errors arrive wrapped with the config file's traceback as
  text; the line users need is its last "SomethingError: ..." line.
  """
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  for line in reversed(lines):
    if re.match(r"^\w+(Error|Exception): ", line):
      return line
  return " ".join(lines) or type(error).__name__


_CONFIG_ERRORS = (AttributeError, OSError, ValueError, TypeError, KeyError,
                  flags.Error)


def _config_path(argv) -> str | None:
  """The file of --config in `argv` (without its :VARIANT)."""
  for i, arg in enumerate(argv):
    value = None
    if arg.startswith("--config="):
      value = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    if value:
      return value.split(":", 1)[0]
  return None


def _config_file_error(error: BaseException, argv) -> str | None:
  """One line for an error the config file itself raised (a syntax error,
  a NameError, anything its code raises), naming the file and the line;
  None when the error did not come from the file."""
  path = _config_path(argv)
  if not path:
    return None
  real = os.path.realpath(path)
  if (isinstance(error, SyntaxError) and error.filename
      and os.path.realpath(error.filename) == real):
    return (f"--config: {path} line {error.lineno}: SyntaxError: "
            f"{error.msg}")
  line, tb = None, error.__traceback__
  while tb is not None:
    if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
      line = tb.tb_lineno
    tb = tb.tb_next
  if line is None:
    return None
  message = str(error).splitlines()[0] if str(error) else ""
  return f"--config: {path} line {line}: {type(error).__name__}: {message}"


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except _CONFIG_ERRORS as e:
    _exit_with_error(_flag_error_line(e))
  except Exception as e:  # pylint: disable=broad-except
    located = _config_file_error(e, argv)
    if located is None:
      raise  # Not the user's config file: a bug, with its traceback.
    _exit_with_error(located)


def _flag_error_line(error: BaseException) -> str:
  if isinstance(error, AttributeError):
    # ConfigDict's answer to overriding a field that does not exist; its
    # str() is the repr of "'name'\nDid you mean ...?".
    text = str(error)
    if text.startswith("'"):
      text = ast.literal_eval(text)
    field, _, hint = text.partition("\n")
    return f"--config: no such field {field}. {hint}".strip()
  return _summary(error)


def _read_config():
  try:
    config = flags.FLAGS.config
    config.to_dict()  # The file is loaded and overrides applied lazily.
    return config
  except _CONFIG_ERRORS as e:
    # A missing config file, a misspelled or mistyped override.
    _exit_with_error(f"--config: {_summary(e)}")
  except Exception as e:  # pylint: disable=broad-except
    located = _config_file_error(e, sys.argv)
    if located is None:
      raise
    _exit_with_error(located)


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
        f"({_summary(e)}); free some space and run the same command again: "
        "it resumes from the newest checkpoint") from e


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    _exit_with_error(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _read_config()
  _hide_accelerators_from_tensorflow()
  _initialize_distributed()
  try:
    train_or_user_error(config, _WORKDIR.value)
  except UserError as e:
    _exit_with_error(str(e))


def cli():
  """The `contrastive-jax-main` command (console_scripts)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  cli()
