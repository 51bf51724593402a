"""Datasets by name: offline digits, TFDS under mock_data, missing data."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from contrastive_jax.data import datasets
from contrastive_jax.data.digits import load_digits_split
from contrastive_jax.errors import ConfigError, DataError


def _rows(images, labels):
  """Examples as sortable byte strings, to compare datasets as multisets."""
  flat = np.asarray(images).reshape(len(labels), -1)
  return sorted(bytes(row) + bytes([int(label) % 256])
                for row, label in zip(flat, labels))


def _collect(ds):
  examples = list(tfds.as_numpy(ds))
  return (np.stack([e['image'] for e in examples]),
          np.array([e['label'] for e in examples]))


def _mock(num_examples):
  # USE_CODE: the pip package ships no metadata for the AUTO policy.
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE)


def test_digits_splits_sizes_dtypes_and_labels():
  train, test = load_digits_split('train'), load_digits_split('test')
  assert len(train['label']) + len(test['label']) == 1797
  assert len(test['label']) == pytest.approx(0.2 * 1797, abs=5)
  for split in (train, test):
    assert split['image'].dtype == np.uint8
    assert split['image'].shape[1:] == (8, 8, 3)
    assert split['image'].max() == 255
    np.testing.assert_array_equal(split['image'][..., 0],
                                  split['image'][..., 2])
    assert split['label'].dtype == np.int64
    assert set(split['label']) == set(range(10))


def test_digits_split_is_stratified_deterministic_and_a_partition():
  train, test = load_digits_split('train'), load_digits_split('test')
  again = load_digits_split('test')
  np.testing.assert_array_equal(test['image'], again['image'])
  np.testing.assert_array_equal(test['label'], again['label'])
  fractions = np.bincount(test['label']) / (
      np.bincount(test['label']) + np.bincount(train['label']))
  assert np.all(np.abs(fractions - 0.2) < 0.01)
  # Together the splits are exactly the whole dataset, each example once.
  full = load_digits()
  full_images = np.round(full.images * 255 / 16).astype(np.uint8)
  both_images = np.concatenate([train['image'], test['image']])[..., 0]
  both_labels = np.concatenate([train['label'], test['label']])
  assert _rows(both_images, both_labels) == _rows(full_images, full.target)


def test_digits_unknown_split_is_config_error():
  with pytest.raises(ConfigError, match='split'):
    load_digits_split('validation')


def test_load_split_digits_elements():
  ds = datasets.load_split('digits', 'test')
  assert ds.element_spec['image'].shape == (8, 8, 3)
  assert ds.element_spec['image'].dtype.name == 'uint8'
  assert ds.element_spec['label'].dtype.name == 'int64'
  assert datasets.num_examples('digits', 'test') == 359
  assert datasets.has_labels('digits')


def test_process_shards_are_disjoint_and_cover_the_split():
  whole = load_digits_split('test')
  shards = [_collect(datasets.load_split('digits', 'test', process_index=i,
                                         process_count=3)) for i in range(3)]
  sizes = [len(labels) for _, labels in shards]
  assert max(sizes) - min(sizes) <= 1
  images = np.concatenate([images for images, _ in shards])
  labels = np.concatenate([labels for _, labels in shards])
  assert _rows(images, labels) == _rows(whole['image'], whole['label'])


def test_bad_process_index_is_rejected():
  with pytest.raises(ValueError):
    datasets.load_split('digits', 'test', process_index=2, process_count=2)


def test_cifar10_under_mock_data():
  with _mock(6):
    ds = datasets.load_split('cifar10', 'train', data_dir='/nonexistent',
                             shuffle_files=True, file_seed=1)
    assert set(ds.element_spec) == {'image', 'label'}
    images, labels = _collect(ds)
    assert datasets.num_examples('cifar10', 'train') == 6
  assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int64 and np.all((labels >= 0) & (labels < 10))


def test_grayscale_tfds_dataset_is_tiled_to_rgb():
  with _mock(2):
    images, _ = _collect(datasets.load_split('mnist', 'test'))
  assert images.shape == (2, 28, 28, 3)
  np.testing.assert_array_equal(images[..., 0], images[..., 1])


def test_has_labels_for_tfds_datasets():
  assert datasets.has_labels('cifar10')
  assert datasets.has_labels('stl10')  # Its 'unlabelled' split has -1.


def test_missing_tfds_data_is_one_line_data_error(tmp_path):
  start = time.monotonic()
  with pytest.raises(DataError) as error:
    datasets.load_split('cifar10', 'train', data_dir=str(tmp_path))
  message = str(error.value)
  assert "'cifar10'" in message and str(tmp_path) in message
  assert 'configs/simclr.py:digits' in message
  assert '\n' not in message
  with pytest.raises(DataError):
    datasets.num_examples('cifar10', 'train', data_dir=str(tmp_path))
  assert time.monotonic() - start < 10  # No download attempt, no network wait.


def test_missing_imagenet_mentions_manual_download(tmp_path):
  with pytest.raises(DataError, match='manual download'):
    datasets.load_split('imagenet2012', 'train', data_dir=str(tmp_path))


def test_unknown_dataset_name_is_config_error(tmp_path):
  with pytest.raises(ConfigError, match="'no_such_dataset' is neither"):
    datasets.load_split('no_such_dataset', 'train', data_dir=str(tmp_path))


def test_download_failure_is_one_data_error_line(tmp_path):
  # imagenet2012 cannot be downloaded: TFDS fails at once on the missing
  # manual archives, with no network access.
  with pytest.raises(DataError) as info:
    datasets.download_and_prepare('imagenet2012', str(tmp_path))
  message = str(info.value)
  assert '\n' not in message
  assert "'imagenet2012'" in message and str(tmp_path) in message
  assert '--config=configs/simclr.py:digits works offline' in message
