"""The whole product on real prepared TFDS datasets (tests/prepared_data.py),
in both on-disk formats, and on the same photos as a labelled image folder:
pretraining with the augmentation preview, the kNN
monitor and the online probe on; linear evaluation; finetuning; the
`preview` grid; `load_encoder`. Before the data seam, every path here but
the pretraining stream crashed on ArrayRecord (`builder.as_dataset`) and
TFRecord was rejected.
"""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import contrastive_jax
from contrastive_jax import preview, train
from contrastive_jax.data import sources
from tests import prepared_data
from tests.test_evaluation import tiny_eval_config
from tests.test_train import photos_config, read_metrics


def _pretrain(workdir, dataset, data_dir):
  c = photos_config(num_steps=2, data_dir=data_dir)
  c.dataset = dataset
  c.image_size = 8
  c.view_augment = "random_resized_crop(8)|flip_lr|color_jitter(0.5, p=0.8)"
  c.eval_augment = "resize(8)"
  c.preview_images = 2
  c.knn.every_steps, c.knn.k = 2, 5
  train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  return c


def _classifier(method, pretrained, workdir, dataset, data_dir):
  c = tiny_eval_config(method, pretrained, num_steps=2)
  c.dataset, c.data_dir = dataset, data_dir
  c.train_split, c.eval_split = "train", "test"
  c.num_classes = -1
  c.eval_batch_size = 16
  train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  with open(os.path.join(workdir, "eval_results.json")) as f:
    return json.load(f)


def _photo_folder(root, splits):
  """The prepared photos as PNG files, root/<split>/<label>/<i>.png."""
  for split, images in splits.items():
    for i, image in enumerate(images):
      directory = root / split / str(i % prepared_data.NUM_CLASSES)
      directory.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(directory / f"{i:03d}.png")
  return f"folder:{root}"


# Finetuning costs as much as linear evaluation: it runs on two of the three.
@pytest.mark.parametrize("key,finetune", [
    (("array_record", "jpeg"), True), (("tfrecord", "png"), False),
    ("folder", True)])
def test_pretrain_evaluate_finetune_preview_and_load(tmp_path, prepared_tfds,
                                                     key, finetune):
  data_dir, splits = prepared_tfds
  if key == "folder":
    dataset = _photo_folder(tmp_path / "photos", splits)
  else:
    dataset = prepared_data.DATASETS[key]
  pretrain_dir = str(tmp_path / "pretrain")
  config = _pretrain(pretrain_dir, dataset, data_dir)
  rows = read_metrics(pretrain_dir)
  assert [r["step"] for r in rows if "knn_accuracy" in r] == [2]
  assert all(np.isfinite(r["probe_loss"]) for r in rows if "loss" in r)

  for method in ("linear_eval", "finetune")[:2 if finetune else 1]:
    results = _classifier(method, pretrain_dir, str(tmp_path / method),
                          dataset, data_dir)
    assert results["num_examples"] == prepared_data.NUM_TEST
    assert results["dataset"] == dataset and results["split"] == "test"
    assert 0.0 <= results["top1"] <= results["top5"] <= 1.0

  grid = preview.preview_grid(config, num_images=2, num_pairs=1)
  side = preview.tile_side(8)
  assert grid.shape == (preview.GAP + 2 * (side + preview.GAP),
                        preview.GAP + 3 * (side + preview.GAP), 3)

  # The encoder reads the dataset's own test images.
  encoder = contrastive_jax.load_encoder(pretrain_dir)
  test = sources.open_source(dataset, "test", data_dir=data_dir)
  images = [tf.image.resize(e["image"], (8, 8)).numpy() / 255.0
            for e in test.sequential(limit=4)]
  features = encoder(np.stack(images).astype(np.float32))
  assert features.shape == (4, encoder.feature_dim)
  assert np.all(np.isfinite(features))
