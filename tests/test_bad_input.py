"""More bad input through the command line: unknown names, non-positive
values, impossible augmentations, corrupt checkpoints, unusable workdirs.
Each ends in one `error:` line naming the field or path, exit status 2, no
traceback, and the workdir exactly as it was."""

import hashlib
import os

import pytest

from tests.test_main import last_line, run_main

TINY = ["--config=configs/simclr.py:digits", "--config.image_size=8",
        "--config.batch_size=16", "--config.num_train_steps=2",
        "--config.warmup_epochs=0",
        "--config.knn.every_steps=0", "--config.preview_images=0",
        "--config.model=tiny_resnet", "--config.width_multiplier=1"]


def snapshot(root):
  """Every path under root with a hash of its content."""
  found = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames:
      found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, root)] = hashlib.sha256(
            f.read()).hexdigest()
  return found


def corrupt_checkpoint(workdir):
  """A checkpoints/4 directory that Orbax lists but cannot read."""
  step = workdir / "checkpoints" / "4"
  for item in ("state", "config"):
    (step / item).mkdir(parents=True)
    (step / item / "_METADATA").write_text("{not json")
  (step / "_CHECKPOINT_METADATA").write_text("garbage")


@pytest.mark.parametrize("extra,expected", [
    (["--config.method=byol"],
     "error: config.method='byol' is not a known method; choose one of:"),
    (["--config.dataset=no_such_dataset"],
     "error: dataset: 'no_such_dataset' is neither 'digits', 'folder:PATH' nor a "
     "TFDS"),
    (["--config.dataset=folder:/no/such/folder"],
     "error: folder:/no/such/folder: no such directory"),
    (["--config.optimizer=adam2"], "error: optimizer"),
    (["--config.learning_rate=-0.1"], "error: config.learning_rate=-0.1 is "
     "invalid: must be a number > 0"),
    (["--config.temperature=-1.0"], "error: config.temperature=-1.0"),
    (["--config.num_train_steps=-1", "--config.num_epochs=0"],
     "error: config.num_epochs=0 is invalid: must be a number > 0"),
    (["--config.num_train_steps=0"], "error: config.num_train_steps=0 is "
     "invalid: must be -1"),
    (["--config.warmup_epochs=100"],
     "error: warmup_epochs must be >= 0 and shorter than the run"),
    (["--config.eval_batch_size=12"], "error: config.eval_batch_size=12"),
    (["--config.max_consecutive_nonfinite=-1"],
     "error: config.max_consecutive_nonfinite=-1 is invalid"),
    (["--config.view_augment=gaussian_blur(kernel_fraction=1.5)"],
     "error: view_augment: gaussian_blur: kernel_fraction must be in (0, 1)"),
    # MoCo: the queue must hold a whole number of batches of keys.
    (["--config=configs/moco_v2.py:digits", "--config.queue_size=1000"],
     "error: config.queue_size=1000 is invalid: must be a positive multiple "
     "of the 16 keys"),
    (["--config.train_split=validation"],
     "error: split: the digits dataset has splits train, test"),
    (["CORRUPT"], "error: cannot restore checkpoint step 4 from {workdir}"),
])
def test_bad_input_table(tmp_path, extra, expected):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("precious")
  if extra == ["CORRUPT"]:
    corrupt_checkpoint(workdir)
    extra = []
  before = snapshot(workdir)
  args = TINY
  if extra and extra[0].startswith("--config="):  # another config file
    args, extra = [extra[0], *TINY[1:]], extra[1:]
  result = run_main(f"--workdir={workdir}", *args, *extra)
  assert result.returncode == 2, result.stderr[-2000:]
  line = last_line(result.stderr)
  assert line.startswith(expected.format(workdir=workdir)), line
  assert "Traceback" not in result.stderr
  assert snapshot(workdir) == before


def test_workdir_that_is_a_file(tmp_path):
  workdir = tmp_path / "run"
  workdir.write_text("precious")
  result = run_main(f"--workdir={workdir}", *TINY)
  assert result.returncode == 2
  assert last_line(result.stderr).startswith(
      f"error: cannot create workdir {workdir}")
  assert workdir.read_text() == "precious"
