"""Bad data input, in process: each new kind of dataset string or folder
that cannot be used ends in one UserError line before the workdir is
touched (the CLI turns it into `error:` and exit 2; tests/test_bad_input.py
pins that contract for one row of this table). Damaged TFDS data found
while reading: a record that cannot be read is one DataError naming its
shard and example; an image no decoder reads is replaced and counted, as in
image folders."""

import io
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from contrastive_jax import train
from contrastive_jax.data import pipeline, sources
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
  c.view_augment, c.eval_augment = "resize(8)|flip_lr", "resize(8)"
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


# --- Damaged TFDS datasets, found while reading ------------------------------

NUM_RECORDS = 8
# Examples whose image bytes no decoder reads, in a valid container.
BAD = {3: b"<html>not an image</html>", 5: None}  # 5: a truncated PNG.


def _png(value):
  out = io.BytesIO()
  Image.fromarray(np.full((6, 7, 3), value, np.uint8)).save(out, "PNG")
  return out.getvalue()


@pytest.fixture(scope="module")
def damaged_tfds(tmp_path_factory):
  """data_dir with 'cj_damaged_ar' (ArrayRecord) and 'cj_damaged_tfr'
  (TFRecord): 8 train examples, label i % 2, image i of value 30 i; the
  images of BAD are not images (the TFDS writer stores bytes as given)."""
  root = str(tmp_path_factory.mktemp("damaged_tfds"))
  images = [_png(30 * i) for i in range(NUM_RECORDS)]
  images[3] = BAD[3]
  images[5] = images[5][:-30]
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3),
                                   encoding_format="png"),
      "label": tfds.features.ClassLabel(num_classes=2)})
  for name, file_format in (("cj_damaged_ar", "array_record"),
                            ("cj_damaged_tfr", "tfrecord")):
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", features=features,
        split_datasets={"train": [(i, {"image": image, "label": i % 2})
                                  for i, image in enumerate(images)]},
        data_dir=root, file_format=file_format, disable_shuffling=True)
  return root


def _read_all(source):
  return list(pipeline.as_numpy_iterator(source.sequential()))


@pytest.mark.parametrize("name", ["cj_damaged_ar", "cj_damaged_tfr"])
def test_an_undecodable_image_reads_the_next_good_one_and_is_counted(
    damaged_tfds, name):
  source = sources.open_source(name, "train", data_dir=damaged_tfds,
                               options={"max_bad_fraction": 0.5})
  examples = _read_all(source)
  for bad, stand_in in ((3, 4), (5, 6)):
    np.testing.assert_array_equal(examples[bad]["image"],
                                  examples[stand_in]["image"])
    assert examples[bad]["label"] == stand_in % 2
  assert examples[4]["image"][0, 0, 0] == 120
  assert source.input_metrics() == {"bad_images": 2}
  named = list(source.bad_images())
  assert named[0].startswith("example 3 (record 3 of ")
  assert f"{name}-train." in named[0]
  # Above the threshold (default 0.001): one line naming them.
  strict = sources.open_source(name, "train", data_dir=damaged_tfds)
  _read_all(strict)
  with pytest.raises(DataError, match=(
      rf"^2 of the 8 images of split 'train' of {name} are unreadable or "
      r"damaged, more than config.data.max_bad_fraction=0.001 \(e.g. "
      r"example 3 \(record 3 of .*\), example 5 .*; replace them")):
    strict.input_metrics()


def _damaged_copy(damaged_tfds, tmp_path, name, damage):
  """A copy of dataset `name` whose one shard `damage(bytes) -> bytes`
  rewrites."""
  shutil.copytree(os.path.join(damaged_tfds, name), tmp_path / name)
  version = tmp_path / name / "1.0.0"
  shard = next(p for p in version.iterdir() if "-train." in p.name)
  shard.write_bytes(damage(bytearray(shard.read_bytes())))
  return str(tmp_path), str(shard)


def _zero_bytes_of(record, start, stop):
  """Zeroes bytes [start, stop) around the image of example `record` < 3
  (found by its PNG signature)."""
  def damage(data):
    images = [i for i in range(len(data)) if data.startswith(b"\x89PNG", i)]
    data[images[record] + start:images[record] + stop] = bytes(stop - start)
    return bytes(data)
  return damage


@pytest.mark.parametrize("name,damage,example", [
    # Riegeli's checksums find any damaged byte.
    ("cj_damaged_ar", _zero_bytes_of(2, 20, 40), 2),
    ("cj_damaged_ar", lambda data: bytes(data[:len(data) // 2]), 0),
    # TFRecord's data checksums are not checked by index (no crc32c
    # here): a damaged tf.train.Example is found when it is parsed.
    ("cj_damaged_tfr", _zero_bytes_of(2, -20, 0), 2),
])
def test_a_record_that_cannot_be_read_names_its_shard_and_example(
    damaged_tfds, tmp_path, name, damage, example):
  data_dir, shard = _damaged_copy(damaged_tfds, tmp_path, name, damage)
  source = sources.open_source(name, "train", data_dir=data_dir)
  with pytest.raises(DataError) as info:
    _read_all(source)
  message = str(info.value)
  assert message.startswith(
      f"dataset {name!r}, split 'train': example {example} (record {example} "
      f"of {shard}) cannot be read: "), message
  assert "the file is damaged or truncated: delete " in message
  assert "\n" not in message
