"""Datasets by name through the source registry: offline digits, real
prepared TFDS datasets in both formats and encodings, missing data."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from contrastive_jax.data import sources
from contrastive_jax.data.digits import load_digits_split
from contrastive_jax.errors import ConfigError, DataError


def _rows(images, labels):
  """Examples as sortable byte strings, to compare datasets as multisets."""
  flat = np.asarray(images).reshape(len(labels), -1)
  return sorted(bytes(row) + bytes([int(label) % 256])
                for row, label in zip(flat, labels))


def _collect(ds):
  """(images, labels) of a stream of same-sized examples."""
  examples = list(tfds.as_numpy(ds))
  return (np.stack([e['image'] for e in examples]),
          np.array([e['label'] for e in examples]))


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


def test_digits_source():
  source = sources.open_source('digits', 'test')
  ds = source.sequential()
  assert ds.element_spec['image'].shape == (8, 8, 3)
  assert ds.element_spec['image'].dtype.name == 'uint8'
  assert ds.element_spec['label'].dtype.name == 'int64'
  assert source.num_examples == 359
  assert source.labelled and source.class_names == tuple('0123456789')
  assert source.image_shape == (8, 8, 3)


def test_process_shards_are_disjoint_and_cover_the_split():
  whole = load_digits_split('test')
  source = sources.open_source('digits', 'test')
  shards = [_collect(source.sequential(process_index=i, process_count=3))
            for i in range(3)]
  sizes = [len(labels) for _, labels in shards]
  assert max(sizes) - min(sizes) <= 1
  images = np.concatenate([images for images, _ in shards])
  labels = np.concatenate([labels for _, labels in shards])
  # In order, not just as a multiset: eval results line up with the split.
  np.testing.assert_array_equal(images, whole['image'])
  np.testing.assert_array_equal(labels, whole['label'])


def test_bad_process_index_is_rejected():
  source = sources.open_source('digits', 'test')
  with pytest.raises(ValueError):
    source.sequential(process_index=2, process_count=2)


@pytest.mark.parametrize('key', [('array_record', 'jpeg'),
                                 ('array_record', 'png'),
                                 ('tfrecord', 'jpeg'), ('tfrecord', 'png')])
def test_prepared_tfds_dataset_reads_back_in_order(prepared_tfds, key):
  from tests import prepared_data  # pylint: disable=g-import-not-at-top
  data_dir, splits = prepared_tfds
  name = prepared_data.DATASETS[key]
  for split, images in splits.items():
    source = sources.open_source(name, split, data_dir=data_dir)
    assert source.num_examples == len(images)
    assert source.class_names == ('0', '1', '2', '3')
    assert source.image_shape == (None, None, 3)
    examples = list(tfds.as_numpy(source.sequential()))
    assert [int(e['label']) for e in examples] == [
        i % prepared_data.NUM_CLASSES for i in range(len(images))]
    for got, want in zip(examples, images):
      assert got['image'].shape == want.shape
      if key[1] == 'png':  # Lossless: the stored pixels exactly.
        np.testing.assert_array_equal(got['image'], want)
      else:
        assert np.abs(got['image'].astype(int) - want).mean() < 8
  # A TFDS slice reads the slice, in order, like the whole split.
  head = sources.open_source(name, 'train[:25%]', data_dir=data_dir)
  assert head.num_examples == prepared_data.NUM_TRAIN // 4
  first = list(tfds.as_numpy(head.sequential()))[0]['image']
  assert first.shape == splits['train'][0].shape


def test_grayscale_tfds_dataset_is_tiled_to_rgb(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(3, 6, 5, 1), dtype=np.uint8)
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 1))})
  tfds.dataset_builders.store_as_tfds_dataset(
      name='cj_gray', version='1.0.0', features=features,
      split_datasets={'test': [(i, {'image': image})
                               for i, image in enumerate(images)]},
      data_dir=str(tmp_path), file_format='array_record',
      disable_shuffling=True)
  source = sources.open_source('cj_gray', 'test', data_dir=str(tmp_path))
  assert not source.labelled  # No label feature: labels are -1.
  got, labels = _collect(source.sequential())
  assert got.shape == (3, 6, 5, 3)
  np.testing.assert_array_equal(got, np.repeat(images, 3, axis=-1))
  np.testing.assert_array_equal(labels, [-1, -1, -1])


def test_missing_tfds_data_is_one_line_data_error(tmp_path):
  start = time.monotonic()
  with pytest.raises(DataError) as error:
    sources.open_source('cifar10', 'train', data_dir=str(tmp_path))
  message = str(error.value)
  assert "'cifar10'" in message and str(tmp_path) in message
  assert 'configs/simclr.py:digits' in message
  # The command that works here, not `tfds build` (needs apache_beam).
  assert f'python -m contrastive_jax.prepare cifar10 --data_dir={tmp_path}' \
      in message
  assert 'tfds build' not in message
  assert '\n' not in message
  assert time.monotonic() - start < 10  # No download attempt, no network wait.


def test_missing_imagenet_mentions_manual_download(tmp_path):
  with pytest.raises(DataError, match='manual download'):
    sources.open_source('imagenet2012', 'train', data_dir=str(tmp_path))


def test_unknown_dataset_name_is_config_error(tmp_path):
  with pytest.raises(ConfigError, match="'no_such_dataset' is neither"):
    sources.open_source('no_such_dataset', 'train', data_dir=str(tmp_path))


def test_unknown_split_is_config_error(prepared_tfds):
  data_dir, _ = prepared_tfds
  with pytest.raises(ConfigError, match="split 'validation'.*it has test, train"):
    sources.open_source('cj_photos_ar_png', 'validation', data_dir=data_dir)


def test_registry_picks_the_module_from_the_string():
  assert sources.kind_of('digits') == 'digits'
  assert sources.kind_of('folder:/data/images') == 'folder'
  assert sources.kind_of('gs://bucket/x') == 'tfds'  # not a folder: no prefix
  assert sources.kind_of('imagenet2012') == 'tfds'
  with pytest.raises(ConfigError, match='config.dataset'):
    sources.kind_of('')
