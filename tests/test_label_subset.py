"""Class-balanced label subsets and the Source that reads one."""

import numpy as np
import pytest

from contrastive_jax.data import label_subset
from contrastive_jax.data.sources import open_source


def test_balanced_indices_are_balanced_deterministic_and_sorted():
  labels = np.repeat(np.arange(10), [100, 120, 90, 100, 100, 100, 100, 100,
                                     100, 100])
  idx = label_subset.balanced_indices(labels, 10, seed=0)
  # 10% of 1,010 examples over 10 classes: round(10.1) = 10 per class.
  assert np.bincount(labels[idx]).tolist() == [10] * 10
  assert np.all(np.diff(idx) > 0)
  np.testing.assert_array_equal(
      idx, label_subset.balanced_indices(labels, 10, seed=0))
  assert not np.array_equal(
      idx, label_subset.balanced_indices(labels, 10, seed=1))
  # At least one per class; never an unlabelled example.
  with_unlabelled = np.concatenate([labels, -np.ones(50, int)])
  tiny = label_subset.balanced_indices(with_unlabelled, 0.01)
  assert np.bincount(with_unlabelled[tiny]).tolist() == [1] * 10
  with pytest.raises(ValueError, match="percent"):
    label_subset.balanced_indices(labels, 0)


def test_subset_source_reads_the_picked_examples():
  base = open_source("digits", "train")
  labels = label_subset.source_labels(base)
  assert labels.shape == (base.num_examples,)
  idx = label_subset.balanced_indices(labels, 10)
  sub = label_subset.SubsetSource(base, idx, description="balanced 10%")
  assert sub.num_examples == len(idx) and sub.class_names == base.class_names
  got = list(sub.sequential().as_numpy_iterator())
  want = list(base.sequential().as_numpy_iterator())
  for i, ex in zip(idx, got):
    np.testing.assert_array_equal(ex["image"], want[i]["image"])
    assert ex["label"] == want[i]["label"]
  assert np.bincount(label_subset.source_labels(sub)).min() >= 1


def test_config_hooks():
  import ml_collections  # pylint: disable=g-import-not-at-top
  base = open_source("digits", "train")
  c = ml_collections.ConfigDict(dict(label_percent=100, dataset="digits",
                                     eval_dataset=""))
  assert label_subset.apply_label_subset(base, c) is base
  assert label_subset.eval_dataset(c) == "digits"
  c.label_percent, c.eval_dataset = 10, "imagenet2012"
  sub = label_subset.apply_label_subset(base, c)
  assert isinstance(sub, label_subset.SubsetSource)
  assert label_subset.eval_dataset(c) == "imagenet2012"
