"""Starts `python -m contrastive_jax.main` as one process of a multi-process
JAX job: GPU hosts (one process per host, driving all its GPUs), several CPU
hosts, or several processes on this host for trying it out.

  # On every host I of N (host 0 runs the coordinator):
  python launch/multi_process.py --coordinator=HOST0:PORT --num_processes=N \
      --process_id=I -- --config=configs/simclr.py:imagenet --workdir=DIR

  # Under SLURM (srun --ntasks-per-node=1 ...), Open MPI (mpirun, with
  # --coordinator) or a torchrun-style environment (MASTER_ADDR, MASTER_PORT,
  # WORLD_SIZE, RANK) the missing values come from the environment:
  srun python launch/multi_process.py -- --config=... --workdir=...

  # N processes on this host, waiting for all of them (testing on CPU):
  python launch/multi_process.py --local=2 -- --config=... --workdir=...

The flags after `--` go to contrastive_jax.main unchanged. --dry-run prints
the command(s) instead of running them. The workdir must be one directory
that every host can reach (a shared file system or gs://).
"""

import argparse
import os
import shlex
import socket
import subprocess
import sys
import threading

_DISTRIBUTED_FLAGS = ("--coordinator_address", "--num_processes",
                      "--process_id")


class UsageError(Exception):
  """Bad or missing arguments: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser():
  p = _Parser(prog="launch/multi_process.py",
              description=__doc__.split("\n")[0])
  p.add_argument("--coordinator", help="HOST:PORT of process 0")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  p.add_argument("--port", type=int, help="coordinator port when the host "
                 "comes from SLURM (default: derived from the job id)")
  p.add_argument("--local", type=int, metavar="N",
                 help="start N processes on this host and wait for all")
  p.add_argument("--dry-run", action="store_true",
                 help="print the command(s) instead of running them")
  p.add_argument("main_args", nargs="*", metavar="-- MAIN_FLAG",
                 help="flags for contrastive_jax.main, after --")
  return p


# --- Where the job description comes from ------------------------------------

def first_slurm_host(nodelist: str) -> str:
  """The first host of a SLURM node list: 'gpu[07-09,12],cpu1' -> 'gpu07'."""
  head = nodelist.split(",", 1)[0]
  if "[" not in head:
    return head
  prefix, _, ranges = nodelist.partition("[")
  return prefix + ranges.split(",")[0].split("-")[0].split("]")[0]


def _from_environment(env, port):
  """(coordinator, num_processes, process_id) from a cluster's environment;
  None for what it does not say."""
  if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    coordinator = None
    if nodelist:
      # Every task must agree on the port without talking: derive it from
      # the job id, inside the ephemeral range.
      port = port or 61440 + int(env.get("SLURM_JOB_ID", "0")) % 4096
      coordinator = f"{first_slurm_host(nodelist)}:{port}"
    return coordinator, int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
  if "OMPI_COMM_WORLD_RANK" in env:
    return (None, int(env["OMPI_COMM_WORLD_SIZE"]),
            int(env["OMPI_COMM_WORLD_RANK"]))
  if "RANK" in env and "WORLD_SIZE" in env:
    coordinator = None
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
      coordinator = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    return coordinator, int(env["WORLD_SIZE"]), int(env["RANK"])
  return None, None, None


def resolve(args, env):
  """(coordinator, num_processes, process_id) for this one process: the
  flags win over the environment."""
  found = _from_environment(env, args.port)
  coordinator = args.coordinator or found[0]
  num_processes = (args.num_processes if args.num_processes is not None
                   else found[1])
  process_id = args.process_id if args.process_id is not None else found[2]
  missing = [flag for flag, value in (("--coordinator", coordinator),
                                      ("--num_processes", num_processes),
                                      ("--process_id", process_id))
             if value is None]
  if missing:
    raise UsageError(
        f"missing {', '.join(missing)}: pass them, run under SLURM, Open MPI "
        "(which needs --coordinator) or torchrun-style variables, or use "
        "--local=N")
  if ":" not in coordinator:
    raise UsageError(f"--coordinator={coordinator} must be HOST:PORT")
  if not 0 <= process_id < num_processes:
    raise UsageError(f"need 0 <= process_id < num_processes, got "
                     f"process_id={process_id}, num_processes={num_processes}")
  return coordinator, num_processes, process_id


def main_command(main_args, coordinator, num_processes, process_id):
  return [sys.executable, "-m", "contrastive_jax.main", *main_args,
          f"--coordinator_address={coordinator}",
          f"--num_processes={num_processes}", f"--process_id={process_id}"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# --- Running -----------------------------------------------------------------

def _relay(stream, prefix, errors, index):
  """Copies a process's output to ours, line by line, keeping the last
  `error: ` line it printed (main's one line on bad input) in
  `errors[index]`."""
  for line in stream:
    sys.stdout.write(prefix + line)
    sys.stdout.flush()
    if line.startswith("error: "):
      errors[index] = line[len("error: "):].rstrip("\n")


def run_local(commands) -> int:
  """Runs the processes side by side; if one fails, stops the others (they
  would wait for it forever) and returns its status."""
  procs, relays = [], []
  errors = [None] * len(commands)
  for i, command in enumerate(commands):
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    relay = threading.Thread(target=_relay,
                             args=(proc.stdout, f"[{i}] ", errors, i),
                             daemon=True)
    relay.start()
    procs.append(proc)
    relays.append(relay)
  failed = None
  pending = set(range(len(procs)))
  while pending and failed is None:
    for i in sorted(pending):
      try:
        status = procs[i].wait(timeout=0.5)
      except subprocess.TimeoutExpired:
        continue
      pending.discard(i)
      if status != 0:
        failed = (i, status)
        break
  for i in pending:
    procs[i].terminate()
  for proc in procs:
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  for relay in relays:
    relay.join(timeout=5)
  if failed:
    # The child's own error line, when it printed one (bad input).
    why = errors[failed[0]]
    print(f"error: process {failed[0]}: {why}" if why else
          f"error: process {failed[0]} exited with status {failed[1]}",
          file=sys.stderr)
    return failed[1] if failed[1] > 0 else 1
  return 0


def _check_main_args(main_args):
  if main_args[:1] == ["--"]:
    main_args = main_args[1:]
  if not main_args:
    raise UsageError("give contrastive_jax.main's flags after --, e.g. -- "
                     "--config=configs/simclr.py:digits --workdir=DIR")
  if "--dry-run" in main_args:
    raise UsageError("--dry-run after -- would go to contrastive_jax.main; "
                     "put it before --")
  for arg in main_args:
    if arg.split("=")[0] in _DISTRIBUTED_FLAGS:
      raise UsageError(f"{arg.split('=')[0]} is set by this launcher; pass "
                       "--coordinator/--num_processes/--process_id before --")
  return main_args


def main(argv=None) -> int:
  try:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    main_args = _check_main_args(args.main_args)
    if args.local is not None:
      if args.local < 1:
        raise UsageError(f"--local={args.local} must be >= 1")
      coordinator = args.coordinator or f"127.0.0.1:{free_port()}"
      commands = [main_command(main_args, coordinator, args.local, i)
                  for i in range(args.local)]
    else:
      commands = [main_command(main_args, *resolve(args, os.environ))]
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for command in commands:
    print(shlex.join(command), flush=True)
  if args.dry_run:
    return 0
  if args.local is None:
    # Become the training process, so that a cluster's signals reach it.
    os.execv(commands[0][0], commands[0])
  return run_local(commands)


if __name__ == "__main__":
  sys.exit(main())
