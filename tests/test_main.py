"""The command line: bad input ends in one `error:` line and exit status 2,
and leaves the workdir as it was. In process (`main.run(argv)`, what the
command runs), but for the subprocess runs of the exit-status contract."""

import contextlib
import io
import os
import subprocess
import sys
import types

import pytest

from contrastive_jax import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  """`python -m contrastive_jax.main ARGS` in this process: its exit status
  and what it wrote to stderr (its `error:` line; absl's log records go to
  the log)."""
  stderr = io.StringIO()
  cwd = os.getcwd()
  os.chdir(REPO)  # the configs/ paths are relative, as in the README
  try:
    with contextlib.redirect_stderr(stderr):
      status = main.run(["main", *args])
  finally:
    os.chdir(cwd)
  return types.SimpleNamespace(returncode=status, stderr=stderr.getvalue())


def run_main_subprocess(*args, env_extra=None):
  env = dict(os.environ)
  env.update(env_extra or {})
  return subprocess.run(
      [sys.executable, "-m", "contrastive_jax.main", *args], cwd=REPO,
      env=env, capture_output=True, text=True, timeout=300)


def last_line(text):
  return [l for l in text.splitlines() if l.strip()][-1]


@pytest.mark.parametrize("extra,expected", [
    # 8 devices (conftest's XLA_FLAGS reach the subprocess).
    (["--config.batch_size=100"],
     "error: config.batch_size=100 is invalid: the global batch must divide "
     "evenly over the 8 devices"),
    (["--config.dataset=cifar10", "--config.data_dir={empty}"],
     "error: dataset 'cifar10' is not prepared in data_dir {empty}"),
    (["--config.model=resnet9"], "error: model must be one of"),
    (["--config.temperature=0"], "error: config.temperature=0"),
    (["--config.batch_sise=3"], "error: --config: no such field 'batch_sise'"),
    (["--config.view_augment=blurr(3)"], "error: view_augment: unknown op"),
])
def test_bad_input_is_one_line_and_workdir_untouched(tmp_path, extra,
                                                     expected):
  empty = tmp_path / "no_data"
  empty.mkdir()
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("precious")
  args = [a.format(empty=empty) for a in extra]
  result = run_main("--config=configs/simclr.py:digits",
                    f"--workdir={workdir}", *args)
  assert result.returncode == 2, result.stderr[-2000:]
  line = last_line(result.stderr)
  assert line.startswith(expected.format(empty=empty)), line
  assert "Traceback" not in result.stderr
  assert sorted(os.listdir(workdir)) == ["keep.txt"]
  assert (workdir / "keep.txt").read_text() == "precious"


def test_missing_data_message_names_dataset_dir_and_offline_config(tmp_path):
  result = run_main("--config=configs/simclr.py:cifar10",
                    f"--workdir={tmp_path / 'run'}",
                    f"--config.data_dir={tmp_path}")
  assert result.returncode == 2
  line = last_line(result.stderr)
  assert "cifar10" in line and str(tmp_path) in line
  assert "--config=configs/simclr.py:digits" in line
  assert not (tmp_path / "run").exists()


def test_unknown_variant_and_missing_config_file(tmp_path):
  result = run_main("--config=configs/simclr.py:nope",
                    f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert last_line(result.stderr).startswith(
      "error: ValueError: unknown simclr config variant 'nope'")
  result = run_main("--config=configs/missing.py", f"--workdir={tmp_path}")
  assert result.returncode == 2
  line = last_line(result.stderr)
  assert line.startswith("error: --config:") and "missing.py" in line


def test_workdir_that_cannot_be_created(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  result = run_main("--config=configs/simclr.py:digits",
                    f"--workdir={blocker / 'run'}")
  assert result.returncode == 2
  assert last_line(result.stderr).startswith(
      f"error: cannot create workdir {blocker / 'run'}")


def _config_file(tmp_path, body):
  path = tmp_path / "my_config.py"
  path.write_text(body)
  return str(path)


@pytest.mark.parametrize("body,expected", [
    ("def get_config(arg=None):\n  x = 1\n  raise RuntimeError('boom')\n",
     "line 3: RuntimeError: boom"),
    ("import ml_collections\n\ndef get_config(arg=None):\n"
     "  return undefined_name\n",
     "line 4: NameError: name 'undefined_name' is not defined"),
    ("def get_config(arg=None)\n  return 1\n", "line 1: SyntaxError: "),
])
def test_a_config_file_that_raises_is_named_with_its_line(tmp_path, body,
                                                          expected):
  """In process: the line `main` prints for an error of the config file's
  own code (contrastive_jax.cli.config_file_error)."""
  from contrastive_jax import cli  # pylint: disable=g-import-not-at-top
  from contrastive_jax.config import lib as config_lib  # pylint: disable=g-import-not-at-top
  path = _config_file(tmp_path, body)
  with pytest.raises(Exception) as error:
    config_lib.module(path).get_config("v")
  line = cli.config_file_error(error.value,
                                 ["main", f"--config={path}:v"])
  assert line.startswith(f"--config: {path} {expected}"), line
  # Not the user's file: no line (the bug keeps its traceback).
  assert cli.config_file_error(error.value,
                                 ["main", "--config=x.py"]) is None


def test_a_config_file_with_a_syntax_error_is_one_line_exit_2(tmp_path):
  """A subprocess: the exit status and the whole of stderr."""
  path = _config_file(tmp_path, "def get_config(arg=None)\n  return 1\n")
  result = run_main_subprocess(f"--config={path}", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert last_line(result.stderr) == (
      f"error: --config: {path} line 1: SyntaxError: expected ':'")
  assert not (tmp_path / "run").exists()


def test_help_exits_0_and_lists_the_flags():
  """`--help` is not an error (absl's own exits 1)."""
  result = run_main_subprocess("--help")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith("usage: python -m contrastive_jax.main")
  assert "--workdir" in result.stdout and "--config" in result.stdout


def test_a_tool_run_in_process_leaves_the_callers_logging_as_it_was():
  """prepare sets absl's verbosity to ERROR and main adds log filters for
  their own runs: in process, the caller's come back (a test after them
  still sees warnings)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from contrastive_jax import prepare  # pylint: disable=g-import-not-at-top
  before = logging.get_verbosity()
  filters = list(logging.get_absl_handler().filters)
  with contextlib.redirect_stdout(io.StringIO()), \
      contextlib.redirect_stderr(io.StringIO()):
    assert prepare.run(["prepare", "digits"]) == 0
  assert run_main("--config=configs/simclr.py:digits").returncode == 2
  assert logging.get_verbosity() == before
  assert logging.get_absl_handler().filters == filters
