"""Real prepared TFDS datasets for the tests, written with the TFDS writer.

Photos (crops of scikit-learn's two sample photos, of several sizes) with
labels i % 4, train and test splits, in every format and encoding the
product reads: ArrayRecord and TFRecord, JPEG and PNG. Nothing is mocked:
`tfds.builder(name, data_dir=...)` reads them as it reads a prepared
cifar10.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "benchmarks"))
import bench_data  # noqa: E402  pylint: disable=g-import-not-at-top

NUM_CLASSES = 4
NUM_TRAIN, NUM_TEST = 48, 20
# (file format, image encoding) -> dataset name.
DATASETS = {
    ("array_record", "jpeg"): "cj_photos_ar_jpeg",
    ("array_record", "png"): "cj_photos_ar_png",
    ("tfrecord", "jpeg"): "cj_photos_tfr_jpeg",
    ("tfrecord", "png"): "cj_photos_tfr_png",
}


def photos(count, seed):
  """uint8 images of varied sizes (18-30 px a side): real pixels that
  survive JPEG, like a small photo dataset."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(count):
    height, width = (int(x) for x in rng.integers(18, 31, size=2))
    out.extend(bench_data.random_crops(1, height, width, seed=seed * 1000 + i))
  return out


def write_all(data_dir):
  """Writes every dataset of DATASETS into data_dir; returns
  {'train': images, 'test': images} (the same pixels in each)."""
  splits = {"train": photos(NUM_TRAIN, seed=1), "test": photos(NUM_TEST, 2)}
  for (file_format, encoding), name in DATASETS.items():
    bench_data.store(name, data_dir, splits, encoding,
                     file_format=file_format, num_classes=NUM_CLASSES)
  return splits
