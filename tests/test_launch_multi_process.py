"""launch/multi_process.py: where the job description comes from, bad input,
and 2 local processes that join one JAX job (gloo on CPU) and train."""

import glob
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "launch", "multi_process.py")
MAIN_ARGS = ["--config=configs/simclr.py:digits", "--workdir=/shared/run"]


def launch(*args, env_extra=None, timeout=60):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_"))
         and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
  env.update(env_extra or {})
  return subprocess.run([sys.executable, SCRIPT, *args], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def load_launcher():
  spec = importlib.util.spec_from_file_location("multi_process", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def distributed_flags(stdout):
  [line] = stdout.splitlines()
  args = shlex.split(line)
  assert args[1:3] == ["-m", "contrastive_jax.main"]
  assert args[3:5] == MAIN_ARGS
  return args[5:]


@pytest.mark.parametrize("args,env,expected", [
    (["--coordinator=host0:1234", "--num_processes=4", "--process_id=3"], {},
     ["--coordinator_address=host0:1234", "--num_processes=4",
      "--process_id=3"]),
    ([], {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_JOB_ID": "4097",
          "SLURM_JOB_NODELIST": "gpu[07-09,12]"},
     # Port from the job id: 61440 + 4097 % 4096.
     ["--coordinator_address=gpu07:61441", "--num_processes=4",
      "--process_id=2"]),
    (["--port=999"], {"SLURM_NTASKS": "2", "SLURM_PROCID": "0",
                      "SLURM_STEP_NODELIST": "node001,node002"},
     ["--coordinator_address=node001:999", "--num_processes=2",
      "--process_id=0"]),
    (["--coordinator=head:5000"], {"OMPI_COMM_WORLD_SIZE": "8",
                                   "OMPI_COMM_WORLD_RANK": "5"},
     ["--coordinator_address=head:5000", "--num_processes=8",
      "--process_id=5"]),
    ([], {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
          "WORLD_SIZE": "2", "RANK": "1"},
     ["--coordinator_address=10.0.0.1:29500", "--num_processes=2",
      "--process_id=1"]),
])
def test_job_from_flags_or_cluster_environment(args, env, expected):
  result = launch(*args, "--dry-run", "--", *MAIN_ARGS, env_extra=env)
  assert result.returncode == 0, result.stderr
  assert distributed_flags(result.stdout) == expected


@pytest.mark.parametrize("args,env,message", [
    (["--", *MAIN_ARGS], {},
     "missing --coordinator, --num_processes, --process_id"),
    (["--", *MAIN_ARGS], {"OMPI_COMM_WORLD_SIZE": "2",
                          "OMPI_COMM_WORLD_RANK": "0"},
     "missing --coordinator:"),
    (["--coordinator=h:1", "--num_processes=2", "--process_id=2", "--",
      *MAIN_ARGS], {}, "need 0 <= process_id < num_processes"),
    (["--coordinator=h", "--num_processes=2", "--process_id=0", "--",
      *MAIN_ARGS], {}, "--coordinator=h must be HOST:PORT"),
    (["--local=2"], {}, "give contrastive_jax.main's flags after --"),
    (["--local=2", "--", *MAIN_ARGS, "--process_id=1"], {},
     "--process_id is set by this launcher"),
    (["--local=0", "--", *MAIN_ARGS], {}, "--local=0 must be >= 1"),
    (["--local=2", "--", *MAIN_ARGS, "--dry-run"], {}, "--dry-run after --"),
])
def test_bad_input_is_one_clear_line(args, env, message):
  result = launch(*args, env_extra=env)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert message in lines[0]


def test_a_failing_process_stops_the_others():
  launcher = load_launcher()
  start = time.monotonic()
  status = launcher.run_local([
      [sys.executable, "-c", "import time; time.sleep(120)"],
      [sys.executable, "-c", "import sys; sys.exit(3)"],
  ])
  assert status == 3
  assert time.monotonic() - start < 60


def test_a_failing_process_s_error_line_is_passed_through(capsys):
  """A child's one `error:` line (main on bad input) is the launcher's last
  line on stderr, named by process, not only its exit status."""
  launcher = load_launcher()
  status = launcher.run_local([
      [sys.executable, "-c", "import time; time.sleep(120)"],
      [sys.executable, "-c",
       "import sys; print('error: config.batch_size=100 is invalid', "
       "file=sys.stderr); sys.exit(2)"],
  ])
  assert status == 2
  captured = capsys.readouterr()
  assert captured.err.strip().splitlines()[-1] == (
      "error: process 1: config.batch_size=100 is invalid")
  assert "[1] error: config.batch_size=100" in captured.out


def test_two_local_processes_train_as_one_job(tmp_path):
  workdir = tmp_path / "run"
  result = launch(
      "--local=2", "--",
      "--config=configs/simclr.py:digits", f"--workdir={workdir}",
      "--config.num_train_steps=2", "--config.warmup_epochs=0",
      "--config.log_every_steps=2", "--config.batch_size=16",
      "--config.preview_images=0",
      env_extra={
          # One CPU device per process: 2 devices in the job.
          "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
          "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
      },
      timeout=300)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  # Both processes saw the whole job.
  for i in (0, 1):
    assert f"[{i}] " in result.stdout
  assert "2 devices over 2 processes" in result.stdout
  with open(workdir / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  losses = [r for r in rows if "loss" in r]
  assert losses[-1]["step"] == 2 and math.isfinite(losses[-1]["loss"])
  assert glob.glob(str(workdir / "checkpoints" / "2" / "*"))
