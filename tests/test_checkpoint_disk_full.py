"""Checkpoints on a full disk: a save that fails (in Orbax's write thread
or not, on a real tmpfs, under a real `ulimit -f`) and a disk already full
before training are one UserError line, naming the newest complete step
where there is one, which the same command resumes from; the leftover of
an interrupted save counts as free space. Damaged checkpoints and changed
configs: tests/test_checkpoint_faults.py."""

import errno
import os
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import orbax.checkpoint as ocp
import pytest

from contrastive_jax import checkpointing, parallel, train
from contrastive_jax.errors import CheckpointError, UserError
# The saved run (fixtures, used by name) and its helpers.
from tests.test_checkpoint_faults import (_CONFIG, _checkpointer,  # noqa: F401  pylint: disable=unused-import
                                          _resume, _state, _tiny, run,
                                          saved_run)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- A full disk ------------------------------------------------------------

def fill_disk_from(monkeypatch, first_step):
  """Saves of `first_step` on fail as on a full disk: ENOSPC from the
  config file's write, in Orbax's write thread when saves are
  asynchronous."""
  write = ocp.JsonCheckpointHandler._save_fn

  async def full(self, item, directory):
    step = int(directory.parent.name.split(".")[0])
    if step >= first_step:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                    str(directory / "metadata"))
    return await write(self, item, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full)


@pytest.mark.parametrize("asynchronous,surfaces_in", [
    (True, "save"), (True, "wait"), (False, "save")])
def test_a_full_disk_is_one_line_naming_the_newest_complete_step(
    run, monkeypatch, asynchronous, surfaces_in):
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  config = ml_collections.ConfigDict(_CONFIG)
  ckpt = _checkpointer(run, asynchronous=asynchronous)
  fill_disk_from(monkeypatch, 5)
  assert ckpt.save(4, _state(mesh, 4), config)
  with pytest.raises(CheckpointError) as info:
    ckpt.save(5, _state(mesh, 5), config)
    if surfaces_in == "wait":
      ckpt.wait()
    else:
      ckpt.save(6, _state(mesh, 6), config)
  assert str(info.value) == (
      f"no space left on device while saving step 5 in "
      f"{run / 'checkpoints'}; the newest complete checkpoint is step 4")
  ckpt.close()
  # Space freed: the rerun resumes from step 4 and saves on. (Not step 5
  # here: the failed save's array writes may still be landing in its
  # temporary directory, which Orbax would clear first.)
  monkeypatch.undo()
  ckpt, mesh, state = _resume(run)
  assert int(state.step) == 4
  assert ckpt.save(6, _state(mesh, 6), config)
  ckpt.close()


# --- Before training, on a real tmpfs, under a real ulimit ------------------

def test_a_disk_already_full_stops_before_training(tmp_path, monkeypatch):
  monkeypatch.setattr(checkpointing, "_free_bytes", lambda directory: 4096)
  with pytest.raises(UserError, match=(
      r"^no space left on device for checkpoints in .*: 4\.0 KiB free, a "
      r"checkpoint needs .*; there is no complete checkpoint$")):
    train.train_and_evaluate(_tiny(), str(tmp_path / "run"),
                             devices=jax.devices()[:2])
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_an_interrupted_save_s_leftover_counts_as_free(run, monkeypatch):
  """A resume that fits once the leftover of an interrupted save is
  cleared (Orbax clears it before saving) is not refused."""
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  abstract = checkpointing.abstract_like(_state(mesh, 0))
  size = sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(abstract))
  leftover = run / "checkpoints" / "4.orbax-checkpoint-tmp-1234" / "state"
  leftover.mkdir(parents=True)
  (leftover / "d").write_bytes(b"\0" * (size + (1 << 20)))
  monkeypatch.setattr(checkpointing, "_free_bytes", lambda directory: 4096)
  ckpt = _checkpointer(run)
  ckpt.check_free_space(abstract)  # 4 KiB free + the leftover: enough
  shutil.rmtree(leftover.parent)
  with pytest.raises(CheckpointError, match="4.0 KiB free"):
    ckpt.check_free_space(abstract)
  ckpt.close()


# A real full disk (a 1 MiB tmpfs, where the test may mount one): Orbax's
# threads and TensorStore's callbacks print nothing but our one line.
_FILL_TMPFS = """
import sys
import numpy as np, ml_collections
from contrastive_jax import checkpointing
from contrastive_jax.errors import UserError
ckpt = checkpointing.Checkpointer(sys.argv[1], save_every_steps=1, keep=100)
config = ml_collections.ConfigDict({"method": "simclr"})
rng = np.random.default_rng(0)
try:
  for step in range(1, 100):
    ckpt.save(step, {f"w{i}": rng.normal(size=2048).astype(np.float32)
                     for i in range(40)}, config)
  ckpt.wait()
except UserError as e:
  print(f"error: {e}", file=sys.stderr)
  sys.exit(2)
"""


def test_a_real_full_disk_prints_one_line(tmp_path):
  if shutil.which("unshare") is None:
    pytest.skip("no unshare to mount a tmpfs")
  mount = tmp_path / "tmpfs"
  mount.mkdir()
  script = (f"mount -t tmpfs -o size=1m tmpfs {mount} || exit 97; "
            f'exec {sys.executable} -c "$0" {mount}/run')
  result = subprocess.run(
      ["unshare", "-rm", "sh", "-c", script, _FILL_TMPFS], cwd=REPO,
      capture_output=True, text=True, timeout=120)
  if result.returncode == 97 or "unshare:" in result.stderr:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
  lines = [l for l in result.stderr.splitlines()
           if l.strip() and not l.startswith(("I", "W"))]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith("error: no space left on device while saving "
                             "step "), lines
  assert "; the newest complete checkpoint is step " in lines[0]


def test_a_file_size_limit_is_one_line_and_the_same_command_resumes(
    tmp_path):
  """A real `ulimit -f` (EFBIG from TensorStore's writes, under a limit the
  first checkpoint fits in): one error line, exit status 2, the complete
  checkpoints kept; the same command without the limit resumes."""
  import resource  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  args = [sys.executable, "-m", "contrastive_jax.main",
          "--config=configs/simclr.py:digits", f"--workdir={workdir}",
          "--config.num_train_steps=3", "--config.warmup_epochs=0",
          "--config.checkpoint_every_steps=1", "--config.knn.every_steps=0",
          "--config.async_checkpointing=False", "--config.preview_images=0"]
  # bytes: the checkpoints' files outgrow it (at 100 KiB they sometimes
  # did not: the files' sizes vary from run to run).
  limit = 20 * 1024

  def limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

  result = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                          timeout=300, preexec_fn=limit_file_size)
  assert result.returncode == 2, result.stderr[-2000:]
  # The contract's line is the last one: the 8 devices' writer threads
  # that fail after it (their executor shut down under them) say nothing.
  last = result.stderr.strip().splitlines()[-1]
  # Which write outgrows the limit first varies from run to run (a
  # checkpoint's, the metrics'): one error line naming the limit.
  assert last.startswith("error: ") and "EFBIG: ulimit -f" in last, last
  match = re.search(r"the newest complete checkpoint is step (\d)", last)
  result = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  if match:
    assert f"at step {match[1]}" in result.stderr
  assert (workdir / "checkpoints" / "3").is_dir()
