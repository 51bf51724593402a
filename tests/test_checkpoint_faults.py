"""Faults around checkpoints: a rerun whose config defines another
experiment, damaged checkpoints. Each ends in one UserError line, or falls
back to the newest step that reads back; nothing on disk is lost (a damaged
step is moved aside, never deleted). A full disk:
tests/test_checkpoint_disk_full.py."""

import json
import glob
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from contrastive_jax import checkpointing, export, parallel, resume_check, train
from contrastive_jax import pretrained
from contrastive_jax.errors import CheckpointError, ConfigError
from contrastive_jax.train_state import TrainState
from tests.test_bad_input import snapshot
from tests.test_evaluation import load_config, tiny_eval_config

# --- Which fields may change on resume (pure) -------------------------------

DEFAULTS = {"label_percent": 100, "input_norm": "none"}


def test_changed_fields_name_the_field_and_both_values():
  stored = {"method": "simclr", "batch_size": 256, "model": "resnet18",
            "head": {"output_dim": 128}}
  new = {"method": "simclr", "batch_size": 128, "model": "resnet18",
         "head": {"output_dim": 64}}
  changes = resume_check.changed_fields(stored, new, DEFAULTS)
  assert changes == [("batch_size", 256, 128), ("head.output_dim", 128, 64)]
  assert resume_check.describe(changes) == (
      "batch_size 256 -> 128, head.output_dim 128 -> 64")


def test_fields_that_may_change_and_equal_spellings_are_no_change():
  stored = {"num_train_steps": 100, "log_every_steps": 10,
            "knn": {"every_steps": 50, "k": 200}, "eval_batch_size": 512,
            "data": {"allow_changed_files": False}, "data_dir": None,
            "lr_decay_epochs": [60, 80], "num_epochs": 100,
            "pretrained": "/runs/a", "warmup_epochs": 10.0}
  new = {"num_train_steps": 300, "log_every_steps": 1,
         "knn": {"every_steps": 0, "k": 200}, "eval_batch_size": 64,
         "data": {"allow_changed_files": True}, "data_dir": "/data",
         "lr_decay_epochs": (60, 80), "num_epochs": 200,
         "pretrained": "/runs/a/", "warmup_epochs": 10}
  assert resume_check.changed_fields(stored, new, DEFAULTS) == []
  # What the kNN monitor computes is not its cadence.
  new["knn"]["k"] = 20
  assert [c.field for c in resume_check.changed_fields(
      stored, new, DEFAULTS)] == ["knn.k"]


def test_a_field_only_one_side_has_is_a_change_unless_at_its_default():
  old = {"method": "simclr"}  # saved before these fields existed
  assert resume_check.changed_fields(
      old, {"method": "simclr", "label_percent": 100}, DEFAULTS) == []
  assert resume_check.changed_fields(
      old, {"method": "simclr", "label_percent": 10}, DEFAULTS) == [
          ("label_percent", resume_check._UNSET, 10)]
  # A field this version no longer has, at its default, is no change.
  assert resume_check.changed_fields(
      {"method": "simclr", "input_norm": "none"}, old, DEFAULTS) == []
  change, = resume_check.changed_fields(
      {"method": "simclr", "queue_size": 4096}, old, DEFAULTS)
  assert resume_check.describe([change]) == "queue_size 4096 -> (unset)"
  # True is not 1: a boolean field is not a count.
  assert resume_check.changed_fields({"online_probe": True},
                                     {"online_probe": 1}, DEFAULTS)


def test_may_change_names_real_fields():
  fields = resume_check.default_values("simclr")
  for name in resume_check.MAY_CHANGE:
    assert name in fields, name
  classifier = resume_check.default_values("linear_eval")
  assert classifier["label_percent"] == 100 and "pretrained" in classifier


# --- Damaged checkpoints: Checkpointer.resume -------------------------------

# The encoder fields name a real (tiny) architecture: a checkpoint's arrays
# must be the ones its stored config builds (pretrained.check_architecture).
_CONFIG = {"method": "simclr", "batch_size": 8, "num_train_steps": 3,
           "model": "tiny_resnet", "width_multiplier": 1, "cifar_stem": True,
           "image_size": 8, "half_precision": False}


def _encoder_shapes():
  from contrastive_jax import models  # pylint: disable=g-import-not-at-top
  module = models.encoder_from_config(ml_collections.ConfigDict(_CONFIG),
                                      bn_axis_name=None)
  return jax.eval_shape(
      lambda x: module.init(jax.random.PRNGKey(0), x, train=False),
      jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))


def _state(mesh, step):
  rng = np.random.default_rng(step)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  encoder = jax.tree.map(lambda s: normal(*s.shape), _encoder_shapes())
  state = TrainState(
      step=jnp.asarray(step, jnp.int32),
      params={"encoder": encoder["params"],
              "head": {"kernel": normal(32, 8)}},
      batch_stats={"encoder": encoder["batch_stats"]},
      opt_state=(normal(64, 32), normal(32, 8)),
      rng=jax.random.PRNGKey(step), extra={"queue": normal(16, 8)})
  return jax.device_put(state, parallel.replicated(mesh))


def _checkpointer(workdir, **kwargs):
  kwargs.setdefault("asynchronous", False)
  return checkpointing.Checkpointer(str(workdir), save_every_steps=1, keep=3,
                                    **kwargs)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
  """A workdir with checkpoints 1, 2, 3 of a small TrainState."""
  workdir = tmp_path_factory.mktemp("saved") / "run"
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  ckpt = _checkpointer(workdir)
  for step in (1, 2, 3):
    ckpt.save(step, _state(mesh, step), ml_collections.ConfigDict(_CONFIG))
  ckpt.close()
  return workdir


@pytest.fixture
def run(saved_run, tmp_path):
  """A copy of `saved_run`, this test's to damage."""
  workdir = tmp_path / "run"
  shutil.copytree(saved_run, workdir)
  return workdir


def truncate_array(workdir, step):
  files = glob.glob(str(workdir / "checkpoints" / str(step) / "state" /
                        "ocdbt.process_0" / "d" / "*"))
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)


def delete_state_metadata(workdir, step):
  os.remove(workdir / "checkpoints" / str(step) / "state" / "_METADATA")


def garbage_config(workdir, step):
  (workdir / "checkpoints" / str(step) / "config" / "metadata").write_text(
      "{garbage")


def empty_step(workdir, step):
  (workdir / "checkpoints" / str(step)).mkdir()


def _resume(workdir, config=_CONFIG):
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  ckpt = _checkpointer(workdir)
  state = ckpt.resume(checkpointing.abstract_like(_state(mesh, 0)),
                      ml_collections.ConfigDict(config))
  return ckpt, mesh, state


@pytest.mark.parametrize("damage,damaged_step,why", [
    (truncate_array, 3, "ValueError: OUT_OF_RANGE"),
    (delete_state_metadata, 3, ""),
    (garbage_config, 3, "its config: JSONDecodeError"),
    (empty_step, 4, "its config: KeyError"),
])
def test_resume_skips_a_damaged_step_and_moves_it_aside(
    run, caplog, damage, damaged_step, why):
  damage(run, damaged_step)
  before = snapshot(run / "checkpoints" / str(damaged_step))
  with caplog.at_level(logging.WARNING):
    ckpt, mesh, state = _resume(run)
  assert int(state.step) == (3 if damaged_step == 4 else 2)
  assert f"Skipping damaged checkpoint step {damaged_step}: {why}" in (
      caplog.text)
  aside = run / checkpointing.DAMAGED_DIR / str(damaged_step)
  assert f"Moved damaged checkpoint step {damaged_step} to {aside}" in (
      caplog.text)
  assert snapshot(aside) == before  # moved, byte for byte
  # The resumed run writes the step number again, and Orbax's keep=3
  # never reaches the damaged step.
  for step in range(int(state.step) + 1, 8):
    assert ckpt.save(step, _state(mesh, step),
                     ml_collections.ConfigDict(_CONFIG))
  ckpt.close()
  assert sorted(os.listdir(run / "checkpoints")) == ["5", "6", "7"]
  assert snapshot(aside) == before


def test_no_step_reads_back_names_each_and_changes_nothing(run):
  for step in (1, 2, 3):
    truncate_array(run, step)
  before = snapshot(run)
  with pytest.raises(CheckpointError) as info:
    _resume(run)
  message = str(info.value)
  assert message.startswith(
      f"cannot restore any checkpoint in {run / 'checkpoints'}: step 3: ")
  assert "; step 2: " in message and "; step 1: " in message
  assert "\n" not in message
  assert snapshot(run) == before


def test_a_changed_config_is_named_before_any_state_is_read(run):
  truncate_array(run, 3)  # would be skipped, were the config the same
  before = snapshot(run)
  with pytest.raises(ConfigError, match=r"with a changed config: "
                     r"batch_size 8 -> 16; "):
    _resume(run, dict(_CONFIG, batch_size=16, num_train_steps=10))
  assert snapshot(run) == before


# --- Damaged checkpoints: load_encoder, pretrained=, export -----------------

def test_load_uses_the_newest_step_that_reads_back(run, caplog):
  truncate_array(run, 3)
  with caplog.at_level(logging.WARNING):
    loaded = pretrained.load(str(run))
  assert loaded.step == 2
  assert "Skipping damaged checkpoint step 3" in caplog.text
  assert os.path.isdir(run / "checkpoints" / "3")  # read only: left there
  want = _state(parallel.make_data_mesh(jax.devices()[:1]), 2)
  for got, expected in zip(jax.tree.leaves(loaded.variables["params"]),
                           jax.tree.leaves(want.params["encoder"])):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


@pytest.mark.parametrize("damage", [truncate_array, delete_state_metadata,
                                    garbage_config])
def test_a_damaged_step_named_by_path_is_one_line(run, damage):
  damage(run, 3)
  step_dir = str(run / "checkpoints" / "3")
  with pytest.raises(CheckpointError,
                     match=r"^cannot restore checkpoint step 3 from ") as info:
    pretrained.load(step_dir)
  assert "\n" not in str(info.value)


def test_pretrained_config_of_a_damaged_workdir(run):
  garbage_config(run, 3)
  assert pretrained.read_config(str(run)).to_dict() == _CONFIG
  with pytest.raises(CheckpointError, match="step 3 .*its config"):
    pretrained.read_config(str(run / "checkpoints" / "3"))


def lying_config(workdir, step):
  """A stored config that parses but names another architecture."""
  path = workdir / "checkpoints" / str(step) / "config" / "metadata"
  config = json.loads(path.read_text())
  config["model"] = "resnet18"
  path.write_text(json.dumps(config))


def test_a_stored_config_that_lies_is_not_trusted(run, tmp_path, caplog):
  """The arrays are tiny_resnet's, the stored config says resnet18: the
  step is damaged (one line naming the first differing path; export writes
  nothing); a workdir falls back to its previous step."""
  lying_config(run, 3)
  step_dir = str(run / "checkpoints" / "3")
  for read in (pretrained.load, pretrained.read_config):
    with pytest.raises(CheckpointError) as info:
      read(step_dir)
    message = str(info.value)
    assert message.startswith("cannot restore checkpoint step 3 from ")
    assert "stored config (model='resnet18') does not match its arrays: " \
        "encoder['batch_stats']" in message and "\n" not in message
  with caplog.at_level(logging.WARNING):
    assert pretrained.load(str(run)).step == 2
    assert pretrained.read_config(str(run)).model == "tiny_resnet"
  assert "Skipping damaged checkpoint step 3" in caplog.text
  out = tmp_path / "encoder.npz"
  with pytest.raises(CheckpointError, match="does not match its arrays"):
    export.export(step_dir, fmt="npz", out=str(out))
  assert not out.exists()


def test_export_of_a_damaged_step_writes_nothing(run, tmp_path):
  truncate_array(run, 3)
  out = tmp_path / "encoder.npz"
  with pytest.raises(CheckpointError, match="cannot restore checkpoint step 3"):
    export.export(str(run / "checkpoints" / "3"), fmt="npz", out=str(out))
  assert not out.exists()


# --- Through train_and_evaluate ---------------------------------------------

def _tiny(method="simclr", **fields):
  if method == "simclr":
    c = load_config("simclr", "digits")
    c.image_size, c.batch_size = 8, 16
    c.view_augment, c.eval_augment = "resize(8)", "resize(8)"
    c.model, c.width_multiplier, c.num_train_steps = "tiny_resnet", 1, 3
    c.knn.every_steps, c.preview_images, c.warmup_epochs = 0, 0, 0.0
  else:
    c = tiny_eval_config(method, fields.pop("pretrained"))
  c.update(fields)
  return c


def test_a_rerun_with_another_pretrained_encoder_stops(tmp_path):
  # Two pretraining workdirs A and B (their configs and encoder arrays'
  # shapes are all that is read before the check), and a linear evaluation
  # of A, saved at step 2.
  encoder = jax.tree.map(lambda s: np.zeros(s.shape, np.float32),
                         _encoder_shapes())
  for name in ("a", "b"):
    ckpt = _checkpointer(tmp_path / name)
    ckpt.save(1, {"params": {"encoder": encoder["params"]},
                  "batch_stats": {"encoder": encoder["batch_stats"]}},
              _tiny())
    ckpt.close()
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  workdir = tmp_path / "eval"
  ckpt = _checkpointer(workdir)
  ckpt.save(2, {"x": np.zeros(1)}, _tiny("linear_eval", pretrained=a))
  ckpt.close()
  before = snapshot(workdir)
  with pytest.raises(ConfigError) as info:
    train.train_and_evaluate(_tiny("linear_eval", pretrained=b),
                             str(workdir), devices=jax.devices()[:2])
  assert f"with a changed config: pretrained {a!r} -> {b!r}; " in str(
      info.value)
  assert snapshot(workdir) == before
