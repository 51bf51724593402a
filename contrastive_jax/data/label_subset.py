"""Class-balanced label subsets (the 1% / 10% semi-supervised setting).

SimCLR's ImageNet subsets are class-balanced lists (TFDS
`imagenet2012_subset/1pct`, `/10pct`); the first N% of a split is not, so
for any other dataset we draw the same kind of subset ourselves: the same
number of examples from every class, chosen by a seeded permutation, so the
subset is identical on every run and every process.
"""

import numpy as np
import tensorflow as tf

from contrastive_jax.config import lib as config_lib
from contrastive_jax.data import pipeline
from contrastive_jax.data.sources.base import READ_GROUP, Source


def balanced_indices(labels, percent: float, *, seed: int = 0) -> np.ndarray:
  """Sorted indices of a class-balanced `percent`% of `labels`.

  Each class gets round(percent/100 * len(labels) / num_classes) examples
  (at least 1, at most all of that class); which ones is fixed by `seed`.
  Unlabelled examples (label < 0) are never picked.
  """
  labels = np.asarray(labels)
  if not 0 < percent <= 100:
    raise ValueError(f"label percent must be in (0, 100]; got {percent}")
  classes = np.unique(labels[labels >= 0])
  if classes.size == 0:
    raise ValueError("a label subset needs labelled examples")
  per_class = max(1, int(round(percent / 100 * labels.size / classes.size)))
  rng = np.random.default_rng(seed)
  picked = []
  for c in classes:
    members = np.flatnonzero(labels == c)
    picked.append(rng.permutation(members)[:per_class])
  return np.sort(np.concatenate(picked)).astype(np.int64)


class SubsetSource(Source):
  """`base` restricted to `indices`: example i here is base's indices[i]."""

  def __init__(self, base: Source, indices, *, description: str):
    self._base = base
    self._indices = np.asarray(indices, np.int64)
    self.dataset = base.dataset
    self.split = f"{base.split} ({description})"
    self.num_examples = int(self._indices.size)
    self.class_names = base.class_names
    self.image_shape = base.image_shape

  def read(self, indices: tf.Tensor) -> dict:
    return self._base.read(tf.gather(tf.constant(self._indices), indices))

  def decode(self, record: dict) -> dict:
    return self._base.decode(record)

  def example_ids(self):
    ids = self._base.example_ids()
    return [ids[i] for i in self._indices]

  def input_metrics(self) -> dict:
    return self._base.input_metrics()

  def commit(self):
    self._base.commit()


def source_labels(source: Source) -> np.ndarray:
  """Every label of `source`, in index order: the split's records are read
  once, and no image is decoded (every source's records carry 'label')."""
  ds = tf.data.Dataset.range(source.num_examples).batch(READ_GROUP)
  ds = ds.map(lambda i: source.read(i)["label"],
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return np.concatenate(list(pipeline.as_numpy_iterator(ds)) or
                        [np.zeros(0, np.int64)])


def apply_label_subset(source: Source, config) -> Source:
  """The hook for the train split: `source` itself at label_percent=100,
  else its class-balanced `config.label_percent`% (see `balanced_indices`)."""
  percent = config_lib.value(config, "label_percent")
  if percent == 100:
    return source
  indices = balanced_indices(source_labels(source), percent,
                             seed=config_lib.value(config, "label_subset_seed"))
  return SubsetSource(source, indices,
                      description=f"class-balanced {percent}%")


def eval_dataset(config) -> str:
  """The dataset `eval_split` is read from: `eval_dataset` when set (an
  ImageNet label subset is evaluated on imagenet2012), else `dataset`."""
  return config_lib.value(config, "eval_dataset") or config.dataset
