"""More bad input through the command line: unknown names, non-positive
values, impossible augmentations, corrupt checkpoints, unusable workdirs.
Each ends in one `error:` line naming the field or path, exit status 2, no
traceback, and the workdir exactly as it was."""

import hashlib
import inspect
import os
import re

import pytest

from tests.test_main import last_line, run_main

TINY = ["--config=configs/simclr.py:digits", "--config.image_size=8",
        "--config.view_augment=random_resized_crop(8)|flip_lr",
        "--config.eval_augment=resize(8)",
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


def _in_process_config(extra):
  """The config main.py builds from TINY + extra (file, variant, dotted
  overrides), without a subprocess: config_lib.load reads each override
  as --config.FIELD=VALUE does."""
  from contrastive_jax.config import lib as config_lib  # pylint: disable=g-import-not-at-top
  args = [*TINY, *extra]
  spec = [a for a in args if a.startswith("--config=")][-1]
  return config_lib.load(
      os.path.join(os.path.dirname(config_lib.CONFIG_DIR),
                   spec[len("--config="):]),
      [a[len("--config."):] for a in args if a.startswith("--config.")])


# In process: the message each bad value ends in (main.py prints it after
# "error: "); the subprocess rows below pin the exit code and stderr.
@pytest.mark.parametrize("extra,expected", [
    (["--config.optimizer=adam2"], "optimizer"),
    (["--config.bn_impl=cudnn"],
     "bn_impl must be one of flax, fused; got 'cudnn'"),
    (["--config.model=resnet51"], "model must be one of resnet18, "),
    (["--config.learning_rate=-0.1"], "config.learning_rate=-0.1 is "
     "invalid: must be a finite number > 0"),
    # Accepted until the non-finite guard stopped the run, 12 steps on.
    (["--config.learning_rate=inf"], "config.learning_rate=inf is "
     "invalid: must be a finite number > 0"),
    (["--config.temperature=-1.0"], "config.temperature=-1.0"),
    (["--config.num_train_steps=-1", "--config.num_epochs=0"],
     "config.num_epochs=0 is invalid: must be a finite number > 0"),
    (["--config.num_train_steps=0"], "config.num_train_steps=0 is "
     "invalid: must be -1"),
    # The warmup in steps depends on the batch: the message says so.
    (["--config.warmup_epochs=100"],
     "config.warmup_epochs=100.0 is invalid: it is 8900 steps (89 per "
     "epoch: 1438 examples / batch_size=16), not shorter than the run's 2"),
    (["--config.eval_batch_size=12"], "config.eval_batch_size=12"),
    (["--config.max_consecutive_nonfinite=-1"],
     "config.max_consecutive_nonfinite=-1 is invalid"),
    (["--config.view_augment=gaussian_blur(kernel_fraction=1.5)"],
     "view_augment: gaussian_blur: kernel_fraction must be in (0, 1)"),
    # MoCo: the queue must hold a whole number of batches of keys.
    (["--config=configs/moco_v2.py:digits", "--config.queue_size=1000"],
     "config.queue_size=1000 is invalid: must be a positive multiple "
     "of the 16 keys"),
    (["--config.train_split=validation"],
     "split: the digits dataset has splits train, test"),
    (["--config.dataset=no_such_dataset"],
     "dataset: 'no_such_dataset' is neither 'digits', 'folder:PATH' nor a "
     "TFDS"),
    # Strings TFDS rejects with a traceback of its own.
    (["--config.dataset=/data/my_images"],
     "dataset: '/data/my_images' is a path, not a dataset name: for a "
     "directory of images use folder:/data/my_images; a dataset is 'digits'"),
    (["--config.dataset=cifar10:9.9.9"],
     "dataset: 'cifar10:9.9.9': Dataset cifar10 cannot be loaded at version "
     "9.9.9, only: 3.0.2; a dataset is 'digits', 'folder:PATH'"),
    (["--config.dataset=cifar10:1.0"],
     "dataset: 'cifar10:1.0' is not a dataset name (VERSION is x.y.z)"),
    # Found after training (before the final save) until they were checked
    # up front.
    (["--config.knn.every_steps=1", "--config.eval_split=nope"],
     "split: the digits dataset has splits train, test"),
    (["--config.eval_augment=nonsense(1)"],
     "eval_augment: unknown op 'nonsense' in 'nonsense(1)'"),
    # An argument only the op itself checks (TensorFlow): before the
    # workdir too.
    (["--config.eval_augment=resize(8)|gaussian_blur(kernel_fraction=2.0)"],
     "eval_augment: gaussian_blur: kernel_fraction must be in (0, 1)"),
    (["--config.eval_augment=flip_lr"],
     "config.eval_augment='flip_lr' is invalid: must give a fixed image "
     "size"),
    # Accepted silently before.
    (["--config.image_size=7"],
     "config.image_size=7 but config.view_augment='random_resized_crop(8)|"
     "flip_lr' makes 8x8 images"),
    (["--config.eval_augment=resize(16)"],
     "config.image_size=8 but config.eval_augment='resize(16)' makes 16x16"),
    (["--config.knn.k=0"], "config.knn.k=0 is invalid: must be an integer "
     ">= 1"),
    (["--config.knn.temperature=0.0"], "config.knn.temperature=0.0 is "
     "invalid"),
    (["--config.weight_decay=nan"], "config.weight_decay=nan is invalid"),
])
def test_bad_input_table_in_process(tmp_path, extra, expected):
  import jax  # pylint: disable=g-import-not-at-top
  from contrastive_jax import train  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("precious")
  before = snapshot(workdir)
  with pytest.raises(UserError) as info:
    train.train_and_evaluate(_in_process_config(extra), str(workdir),
                             devices=jax.devices()[:8])
  assert str(info.value).startswith(expected), str(info.value)
  assert "\n" not in str(info.value)
  assert snapshot(workdir) == before


@pytest.mark.parametrize("extra,expected", [
    (["--config.method=swav"],
     "error: config.method='swav' is not a known method; choose one of:"),
    (["--config.dataset=folder:/no/such/folder"],
     "error: folder:/no/such/folder: no such directory"),
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
  result = run_main(f"--workdir={workdir}", *TINY, *extra)
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


def test_one_record_per_op_agrees_with_both_functions():
  """data/op_table.py: each op's check has its host function's signature
  (and its device function's), `sets_size` is whether it takes a size, and
  the host and device tables are the record's functions."""
  from contrastive_jax.data import augment, device_augment, op_table, view_spec  # pylint: disable=g-import-not-at-top
  assert set(view_spec.OP_NAMES) == set(augment.OPS) == set(op_table.OPS)
  for name, op in op_table.OPS.items():
    host = inspect.signature(op.host_factory())
    assert inspect.signature(op.check) == host, name
    assert op.sets_size == ("size" in host.parameters), name
    assert (name in view_spec.SIZE_OPS) == op.sets_size, name
    assert augment.OPS[name] is op.host_factory()
    if op.device is None:
      assert op.sets_size and name not in device_augment.OPS, name
    else:
      assert inspect.signature(op.device_factory()) == host, name
      assert device_augment.OPS[name] is op.device_factory()


@pytest.mark.parametrize("spec,message", [
    ("random_resized_crop(8, area=(0.5, 0.2))", "area must be (min, max)"),
    ("center_crop(8, crop_fraction=2)", "crop_fraction must be in (0, 1]"),
    ("resize(8, method='cubic')", "method must be one of"),
    ("flip_lr(p=2)", "flip_lr: p must be a number in [0, 1]"),
    ("color_jitter(0.5, hue=0.9)", "hue must be <= 0.5"),
    ("gaussian_blur(kernel_size=4)", "kernel_size must be an odd integer"),
    ("solarize(threshold='x')", "threshold must be a number"),
    ("grayscale(0.2, 3)", "bad arguments for op 'grayscale'"),
    ("blurr(3)", "unknown op 'blurr'"),
])
def test_spec_arguments_are_checked_without_building_anything(spec, message):
  """view_spec.check_spec: the ops' checks, no TensorFlow or JAX op built,
  the same one line as building the view gives."""
  from contrastive_jax.data import augment, view_spec  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=re.escape(message)) as checked:
    view_spec.check_spec(spec, "view_augment")
  assert str(checked.value).startswith("view_augment: ")
  with pytest.raises(ConfigError) as built:
    augment.build_view(spec, "view_augment")
  assert str(built.value) == str(checked.value)