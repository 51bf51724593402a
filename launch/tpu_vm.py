"""Cloud TPU VMs for contrastive_jax: create, set up, run, read logs, delete.

  python launch/tpu_vm.py create --name=N --zone=Z --accelerator-type=v4-32 \
      --version=tpu-ubuntu2204-base [--spot | --preemptible]
  python launch/tpu_vm.py setup  --name=N --zone=Z [--source=DIR | --git=URL]
  python launch/tpu_vm.py run    --name=N --zone=Z \
      --config=configs/simclr.py:imagenet --workdir=gs://BUCKET/run \
      [--data-dir=gs://BUCKET/tensorflow_datasets] [--foreground] \
      [-- --config.batch_size=1024 ...]
  python launch/tpu_vm.py logs   --name=N --zone=Z [--follow] [--lines=100]
  python launch/tpu_vm.py delete --name=N --zone=Z
  python launch/tpu_vm.py all    (create, setup, run --foreground, delete)

Every command takes --project and --dry-run (print the gcloud commands, run
nothing). Commands that touch the workers use `--worker=all`: a pod slice runs
the same program on every host and JAX connects them.

Only the standard library is used, so this runs on any machine with gcloud.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys

# Run as a script, this directory is on sys.path already; loaded from its
# path (importlib) it may not be.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
  sys.path.insert(0, _HERE)

from tpu_vm_steps import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    LocalStep, create_steps, delete_steps, logs_steps, run_steps, setup_steps)

REPO_ROOT = os.path.dirname(_HERE)


class UsageError(Exception):
  """Bad or missing arguments: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
  """argparse, but errors are one line (usage stays in --help)."""

  def error(self, message):
    raise UsageError(f"{message} (see {self.prog} --help)")


# --- Arguments -----------------------------------------------------------------

def _add_vm_args(p):
  p.add_argument("--name", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True, help="e.g. us-central2-b")
  p.add_argument("--project", help="GCP project (default: gcloud's)")
  p.add_argument("--dry-run", action="store_true",
                 help="print the gcloud commands instead of running them")


def _add_create_args(p):
  p.add_argument("--accelerator-type", required=True,
                 help="e.g. v3-8, v4-32, v5litepod-16")
  p.add_argument("--version", required=True,
                 help="TPU runtime, e.g. tpu-ubuntu2204-base (v2-v4), "
                 "v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv6e (v6e)")
  p.add_argument("--spot", action="store_true", help="a Spot VM")
  p.add_argument("--preemptible", action="store_true",
                 help="a preemptible VM (older; prefer --spot)")


def _add_setup_args(p):
  p.add_argument("--source", default=REPO_ROOT,
                 help="local project tree to copy (default: this checkout)")
  p.add_argument("--git", help="clone this repository URL on the workers "
                 "instead of copying --source")
  p.add_argument("--ref", default="HEAD", help="with --git: branch, tag or "
                 "commit to check out (default: the default branch)")
  p.add_argument("--python", default="3.12",
                 help="Python version of the workers' venv")


def _add_run_args(p):
  p.add_argument("--config", required=True,
                 help="e.g. configs/simclr.py:imagenet (relative to the "
                 "project root)")
  p.add_argument("--workdir", required=True,
                 help="gs:// directory for checkpoints and metrics")
  p.add_argument("--data-dir", help="gs:// TFDS data dir (TFDS_DATA_DIR)")
  p.add_argument("main_args", nargs="*", metavar="-- MAIN_FLAG",
                 help="more flags for contrastive_jax.main, after --")


def build_parser():
  parser = _Parser(prog="launch/tpu_vm.py", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True,
                                   metavar="COMMAND")
  p = commands.add_parser("create", help="create the TPU VM or pod slice")
  _add_vm_args(p)
  _add_create_args(p)
  p = commands.add_parser("setup", help="install the project on all workers")
  _add_vm_args(p)
  _add_setup_args(p)
  p = commands.add_parser("run", help="start training on all workers")
  _add_vm_args(p)
  _add_run_args(p)
  p.add_argument("--foreground", action="store_true",
                 help="follow the logs until the run ends")
  p = commands.add_parser("logs", help="show the workers' training logs")
  _add_vm_args(p)
  p.add_argument("--lines", type=int, default=100)
  p.add_argument("--follow", action="store_true", help="keep streaming")
  p = commands.add_parser("delete", help="delete the TPU VM")
  _add_vm_args(p)
  p = commands.add_parser("all", help="create, setup, run (foreground), "
                          "delete")
  _add_vm_args(p)
  _add_create_args(p)
  _add_setup_args(p)
  _add_run_args(p)
  p.add_argument("--keep-vm", action="store_true",
                 help="do not delete the VM at the end")
  return parser


def parse_args(argv):
  args = build_parser().parse_args(argv)
  if "--dry-run" in getattr(args, "main_args", ()):
    raise UsageError("--dry-run after -- would go to contrastive_jax.main; "
                     "put it before --")
  if getattr(args, "spot", False) and args.preemptible:
    raise UsageError("--spot and --preemptible exclude each other")
  if getattr(args, "workdir", None) is not None and not (
      args.workdir.startswith("gs://")):
    raise UsageError(f"--workdir={args.workdir} must be a gs:// path: every "
                     "worker writes to it and it must outlive the VM")
  if getattr(args, "data_dir", None) and not args.data_dir.startswith(
      "gs://"):
    raise UsageError(f"--data-dir={args.data_dir} must be a gs:// path that "
                     "every worker can read")
  if getattr(args, "source", None) and not getattr(args, "git", None) and (
      not os.path.isdir(args.source)):
    raise UsageError(f"--source={args.source} is not a directory")
  if getattr(args, "config", None) is not None:
    check_config_file(args.config, getattr(args, "source", None) or REPO_ROOT)
  return args


def check_config_file(config, root):
  """A UsageError unless the file of --config=FILE[:VARIANT] is in `root`
  (the project tree the workers get), so that a typo stops here and not on
  every worker after the VM has started."""
  path = config.split(":", 1)[0]
  if not path:
    raise UsageError(f"--config={config}: expected FILE[:VARIANT], e.g. "
                     "configs/simclr.py:imagenet")
  if not os.path.isfile(os.path.join(root, path)):
    raise UsageError(f"--config={config}: no such file {path} in {root} "
                     "(paths are relative to the project root the workers "
                     "run in)")
  check_config_variant(config, os.path.join(root, path))


def check_config_variant(config, path):
  """A UsageError when the config file rejects the variant (or raises):
  what `contrastive_jax.main` would say on every worker. Skipped where the
  config's own imports (ml_collections, the package) are not installed
  here: the workers check it then."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  variant = config.split(":", 1)[1] if ":" in config else None
  spec = importlib.util.spec_from_file_location("launch_config", path)
  module = importlib.util.module_from_spec(spec)
  added = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  sys.path.insert(0, added)  # configs/ import the package beside them
  try:
    spec.loader.exec_module(module)
    module.get_config(variant)
  except ImportError:
    return
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).splitlines()[0] if str(e) else ""
    raise UsageError(f"--config={config}: {type(e).__name__}: {first}")
  finally:
    sys.path.remove(added)


# --- Running -------------------------------------------------------------------

def execute(steps, dry_run):
  """Runs steps in order, stopping at the first failure."""
  for step in steps:
    if isinstance(step, LocalStep):
      if dry_run:
        print(f"# local: {step.description}")
      else:
        step.fn()
      continue
    print(shlex.join(step), flush=True)
    if dry_run:
      continue
    status = subprocess.run(step, check=False).returncode
    if status != 0:
      raise StepFailed(f"{shlex.join(step[:5])} ... exited with status "
                       f"{status}", status)


class StepFailed(Exception):

  def __init__(self, message, status):
    super().__init__(message)
    self.status = status


def run_command(args):
  dry = args.dry_run
  if args.command == "create":
    execute(create_steps(args), dry)
  elif args.command == "setup":
    execute(setup_steps(args), dry)
  elif args.command == "run":
    execute(run_steps(args, foreground=args.foreground), dry)
  elif args.command == "logs":
    execute(logs_steps(args), dry)
  elif args.command == "delete":
    execute(delete_steps(args), dry)
  else:  # all
    execute(create_steps(args), dry)
    try:
      execute(setup_steps(args) + run_steps(args, foreground=True), dry)
    finally:
      # The VM costs money by the hour; checkpoints are in the gs:// workdir.
      if not args.keep_vm:
        execute(delete_steps(args), dry)


def main(argv=None):
  try:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.dry_run and shutil.which("gcloud") is None:
      raise UsageError("gcloud is not on PATH: install the Google Cloud SDK "
                       "and run `gcloud auth login`, or add --dry-run to "
                       "print the commands")
    run_command(args)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except StepFailed as e:
    print(f"error: {e}", file=sys.stderr)
    return e.status
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
