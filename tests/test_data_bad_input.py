"""Bad data input, in process: each new kind of dataset string or folder
that cannot be used ends in one UserError line before the workdir is
touched (the CLI turns it into `error:` and exit 2; tests/test_bad_input.py
pins that contract for one row of this table)."""

import jax
import numpy as np
import pytest
from PIL import Image

from contrastive_jax import train
from contrastive_jax.errors import ConfigError, DataError
from tests.test_bad_input import snapshot
from tests.test_evaluation import tiny_eval_config
from tests.test_simclr_step import tiny_config


def _write_png(path, value=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)


@pytest.fixture
def folders(tmp_path):
  """A labelled folder (train/<class>/), an unlabelled tree, an empty one."""
  labelled = tmp_path / "labelled"
  for split in ("train", "test"):
    for label, name in enumerate(("ant", "bee", "cat")):
      for i in range(2):
        _write_png(labelled / split / name / f"{i}.png", 40 * label + i)
  unlabelled = tmp_path / "unlabelled"
  for i in range(4):
    _write_png(unlabelled / "a" / "deep" / f"{i}.png", i)
  empty = tmp_path / "empty"
  (empty / "sub").mkdir(parents=True)
  (empty / "sub" / "notes.txt").write_text("not an image")
  return {"labelled": labelled, "unlabelled": unlabelled, "empty": empty,
          "missing": tmp_path / "missing"}


def _pretrain_config(dataset, **fields):
  c = tiny_config()
  c.dataset = dataset
  c.num_train_steps = 2
  c.num_classes = -1
  c.update(fields)
  return c


ROWS = [
    ("missing", {}, DataError, r"folder:.*missing: no such directory"),
    ("empty", {}, DataError, r"split 'train' of folder:.*empty: no image "
     r"files"),
    ("labelled", {"eval_split": "validation"}, ConfigError,
     r"split 'validation' of folder:.*labelled.*test, train"),
    ("labelled", {"num_classes": 10}, ConfigError,
     r"config.num_classes=10 but dataset 'folder:.*labelled' has 3 classes; "
     r"set --config.num_classes=-1"),
    ("labelled", {"data": {"max_bad_fraction": 2.0, "allow_changed_files":
                           False}},
     ConfigError, r"config.data.max_bad_fraction=2.0 is invalid"),
]


@pytest.mark.parametrize("folder,fields,error,match", ROWS)
def test_bad_folder_input_is_one_line_and_leaves_the_workdir(
    tmp_path, folders, folder, fields, error, match):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("precious")
  before = snapshot(workdir)
  config = _pretrain_config(f"folder:{folders[folder]}", **fields)
  with pytest.raises(error, match=match) as info:
    train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert "\n" not in str(info.value)
  assert snapshot(workdir) == before


@pytest.mark.parametrize("method", ["linear_eval", "finetune"])
def test_classifiers_on_an_unlabelled_folder_stop_with_one_line(
    tmp_path, folders, method):
  workdir = tmp_path / method
  config = tiny_eval_config(method, "random")
  config.dataset = f"folder:{folders['unlabelled']}"
  with pytest.raises(DataError, match=rf"^{method} needs labels, and dataset "
                     r"'folder:.*unlabelled' \(split 'train'\) has none"):
    train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  assert not workdir.exists()


def test_pretraining_on_an_unlabelled_folder_turns_probe_and_knn_off(
    tmp_path, folders):
  workdir = tmp_path / "run"
  config = _pretrain_config(f"folder:{folders['unlabelled']}",
                            batch_size=4, preview_images=1)
  config.knn.every_steps = 1
  state = train.train_and_evaluate(config, str(workdir),
                                   devices=jax.devices()[:1])
  assert int(state.step) == 2
  assert "probe" not in state.params  # no classes: no probe
  assert (workdir / "data_index" / "train.json").exists()
  import json  # pylint: disable=g-import-not-at-top
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert not any("knn_accuracy" in r or "probe_loss" in r for r in rows)
  assert [r["bad_images"] for r in rows if "loss" in r] == [0.0]
