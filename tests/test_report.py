"""`python -m contrastive_jax.evaluation.report`: a results file it cannot
use is one `error:` line and exit status 2, never a traceback."""

import json

import pytest

from contrastive_jax.evaluation import report

GOOD = {"top1": 0.5, "top5": 0.875, "num_examples": 64,
        "pretrained": "/runs/simclr", "checkpoint_step": 30}


def _workdir(tmp_path, name, content):
  workdir = tmp_path / name
  workdir.mkdir()
  (workdir / report.RESULTS_FILE).write_text(
      content if isinstance(content, str) else json.dumps(content))
  return str(workdir)


def test_rows_of_good_results(tmp_path, capsys):
  a = _workdir(tmp_path, "a", GOOD)
  b = _workdir(tmp_path, "b", dict(GOOD, pretrained=None, top1=0.25))
  assert report.run(["report", a, b]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert "/runs/simclr @30" in lines[1] and "50.00%" in lines[1]
  assert "? @30" in lines[2] and "25.00%" in lines[2]


@pytest.mark.parametrize("content,message", [
    ({}, "no top1, top5, num_examples in it"),
    ([1, 2], "expected a JSON object with top1, top5, num_examples, got list"),
    (dict(GOOD, top5="high"), "top5 is 'high', not a number"),
    (dict(GOOD, checkpoint_step=None), "checkpoint_step is None"),
    (dict(GOOD, pretrained=7), "pretrained is 7, not a path"),
    ("{not json", "cannot read"),
])
def test_unusable_results_are_one_line(tmp_path, capsys, content, message):
  workdir = _workdir(tmp_path, "run", content)
  assert report.run(["report", workdir]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  lines = captured.err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  assert message in lines[0]


def test_no_results_is_one_line(tmp_path, capsys):
  assert report.run(["report", str(tmp_path)]) == 2
  assert capsys.readouterr().err.startswith("error: no evaluation results")


def test_baselines_side_by_side_with_the_margin(tmp_path, capsys):
  same = {"dataset": "digits", "split": "test"}
  enc = _workdir(tmp_path, "enc", dict(GOOD, top1=0.92, knn_top1=0.9,
                                       **same))
  rnd = _workdir(tmp_path, "rnd", dict(GOOD, pretrained="random", top1=0.6,
                                       checkpoint_step=-1, knn_top1=0.5,
                                       **same))
  pix = _workdir(tmp_path, "pix", dict(GOOD, pretrained="pixels", top1=0.89,
                                       checkpoint_step=-1, knn_top1=0.93,
                                       **same))
  # A baseline of another dataset is not compared with.
  other = _workdir(tmp_path, "other", dict(GOOD, pretrained="pixels",
                                           top1=0.99, dataset="mnist",
                                           split="test"))
  assert report.run(["report", enc, rnd, pix, other]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert "random (baseline)" in lines[2] and "50.00%" in lines[2]
  assert "pixels (baseline)" in lines[3] and "93.00%" in lines[3]
  assert lines[5] == (f"margin: {enc}: +3.00 points top-1 over the better "
                      "baseline (pixels, 89.00%); kNN -3.00 (pixels, "
                      "93.00%)")
  assert len(lines) == 6


def test_the_old_module_name_still_runs(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  a = _workdir(tmp_path, "a", GOOD)
  result = subprocess.run([sys.executable, "-m", "contrastive_jax.report", a],
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0 and "/runs/simclr @30" in result.stdout


def test_the_entry_points_are_installed_commands(tmp_path):
  """setup.py's console_scripts (an editable install makes them): a
  command with no arguments is one usage line and exit status 2."""
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  bin_dir = os.path.dirname(sys.executable)
  for name in ("report", "digits"):
    command = shutil.which(f"contrastive-jax-{name}", path=bin_dir)
    assert command, f"contrastive-jax-{name} is not installed"
    result = subprocess.run([command], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "usage" in result.stderr
  for name in ("main", "export", "embed", "preview", "prepare"):
    assert shutil.which(f"contrastive-jax-{name}", path=bin_dir), name


def test_no_workdir_is_the_usage_line_and_help_exits_0(capsys):
  assert report.run(["report"]) == 2
  assert capsys.readouterr().err == (
      "error: usage: python -m contrastive_jax.evaluation.report WORKDIR "
      "[WORKDIR ...]\n")
  assert report.run(["report", "--help"]) == 0
  assert capsys.readouterr().out.startswith(
      "usage: python -m contrastive_jax.evaluation.report")
