"""TFDS datasets prepared as TFRecord, read by index: the same examples as
the same data written as ArrayRecord, group reads, exact resume, and the
offset index's cache and damage checks. Real datasets, written by the TFDS
writer."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data import pipeline, sources
from contrastive_jax.data.sources import tfrecord_index
from contrastive_jax.data.sources.tfds_tfrecord import TFRecordSource
from contrastive_jax.errors import DataError

NUM_TRAIN, NUM_TEST, NUM_CLASSES = 30, 7, 5
SPLITS = ['train', 'test', 'train[:10%]', 'train[3:27]', 'train[-5:]',
          'train[40%:]']


def store(name, root, splits, file_format, num_shards):
  """`splits` ({split: uint8 images}) as TFDS dataset `name`, PNG, labels
  i % NUM_CLASSES, in `num_shards` shards per split."""
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3)),
      'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
  })
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version='1.0.0', features=features,
      split_datasets={split: [(i, {'image': image, 'label': i % NUM_CLASSES})
                              for i, image in enumerate(images)]
                      for split, images in splits.items()},
      data_dir=root, file_format=file_format, disable_shuffling=True,
      download_config=tfds.download.DownloadConfig(num_shards=num_shards))


def noise_images(count, seed):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, size=(int(h), int(w), 3), dtype=np.uint8)
          for h, w in rng.integers(6, 20, size=(count, 2))]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """The same PNGs as 'cj_tfr' (TFRecord, 3 shards a split) and 'cj_ar'
  (ArrayRecord, 1 shard)."""
  root = str(tmp_path_factory.mktemp('tfds'))
  splits = {'train': noise_images(NUM_TRAIN, 0),
            'test': noise_images(NUM_TEST, 1)}
  store('cj_tfr', root, splits, 'tfrecord', num_shards=3)
  store('cj_ar', root, splits, 'array_record', num_shards=1)
  return root


def copy_of(data_dir, tmp_path):
  """A private copy of the TFRecord dataset (for tests that damage it),
  without the offsets other tests cached."""
  root = str(tmp_path / 'tfds')
  shutil.copytree(os.path.join(data_dir, 'cj_tfr'),
                  os.path.join(root, 'cj_tfr'),
                  ignore=shutil.ignore_patterns(tfrecord_index.CACHE_SUBDIR))
  return root, os.path.join(root, 'cj_tfr', '1.0.0')


def decoded(source, indices):
  group = source.read(tf.constant(indices, tf.int64))
  return [source.decode({k: v[i] for k, v in group.items()})
          for i in range(len(indices))]


def assert_same(a, b):
  np.testing.assert_array_equal(a['image'], b['image'])
  assert int(a['label']) == int(b['label'])


@pytest.mark.parametrize('split', SPLITS)
def test_same_examples_as_array_record(data_dir, split):
  tfr = sources.open_source('cj_tfr', split, data_dir=data_dir)
  ar = sources.open_source('cj_ar', split, data_dir=data_dir)
  assert isinstance(tfr, TFRecordSource)
  assert tfr.num_examples == ar.num_examples > 0
  assert tfr.class_names == ar.class_names
  pairs = zip(tfr.sequential().as_numpy_iterator(),
              ar.sequential().as_numpy_iterator(), strict=True)
  for a, b in pairs:
    assert_same(a, b)
  # Out of order and repeated, across shards.
  indices = [tfr.num_examples - 1, 0, tfr.num_examples // 2, 0]
  for a, b in zip(decoded(tfr, indices), decoded(ar, indices)):
    assert_same(a, b)


def test_a_group_read_equals_single_reads(data_dir):
  source = sources.open_source('cj_tfr', 'train', data_dir=data_dir)
  indices = [29, 0, 11, 29, 10, 9, 20]
  for index, example in zip(indices, decoded(source, indices)):
    assert_same(example, decoded(source, [index])[0])


def test_resumed_stream_equals_the_uninterrupted_one(data_dir):
  source = sources.open_source('cj_tfr', 'train', data_dir=data_dir)
  spec = 'random_resized_crop(8)|flip_lr|color_jitter(0.5, p=0.8)'
  make = pipeline.pretrain_stream(
      source=source, local_batch_size=4, view_specs=(spec, spec), seed=3,
      process_index=0, process_count=1)
  # 7 steps an epoch: the resume crosses an epoch boundary.
  whole = list(pipeline.as_numpy_iterator(make(0).take(10)))
  resumed = list(pipeline.as_numpy_iterator(make(6).take(4)))
  for a, b in zip(whole[6:], resumed, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def write_records(path, payloads):
  with tf.io.TFRecordWriter(path) as writer:
    for payload in payloads:
      writer.write(payload)


@pytest.mark.parametrize('stream', [False, True])
def test_scan_finds_every_record(tmp_path, stream):
  payloads = [b'', b'x' * 5, b'y' * 70000, b'z']
  path = str(tmp_path / 'r.tfrecord')
  write_records(path, payloads)
  size = os.path.getsize(path)
  found = tfrecord_index.scan_file(path, size, stream=stream)
  ends = np.cumsum([len(p) + tfrecord_index.OVERHEAD_BYTES for p in payloads])
  np.testing.assert_array_equal(found, np.concatenate([[0], ends]))
  with open(path, 'rb') as f:
    data = f.read()
  read_at = lambda offset, count: data[offset:offset + count]
  with pytest.raises(tfrecord_index.CorruptFile, match='record 3 at byte'):
    tfrecord_index.scan(read_at, size - 10)
  with pytest.raises(tfrecord_index.CorruptFile, match='no complete header'):
    tfrecord_index.scan(read_at, int(ends[-2]) + 5)


def cache_files(version_dir):
  cache = os.path.join(version_dir, tfrecord_index.CACHE_SUBDIR)
  return sorted(os.path.join(cache, f) for f in os.listdir(cache))


def shard_of(entry):
  """The shard whose offsets cache entry `entry` holds."""
  cache_dir, name = os.path.split(entry)
  return os.path.join(os.path.dirname(cache_dir), name[:-len('.npz')])


def test_cache_next_to_the_data_is_reused_and_bad_entries_are_rebuilt(
    data_dir, tmp_path, monkeypatch):
  root, version_dir = copy_of(data_dir, tmp_path)
  reference = decoded(sources.open_source('cj_tfr', 'train', data_dir=root),
                      list(range(NUM_TRAIN)))
  entries = cache_files(version_dir)
  assert len(entries) == 3  # One per shard of the split read.
  good = open(entries[0], 'rb').read()
  # Damaged, from another file version (time), with wrong offsets: each is
  # noticed and replaced by a fresh scan, and the reads stay right.
  with open(entries[0], 'wb') as f:
    f.write(b'garbage')
  os.utime(shard_of(entries[1]), ns=(1, 1))
  shard = shard_of(entries[2])
  wrong = tfrecord_index.offsets(shard, NUM_TRAIN // 3).copy()
  wrong[5] += 1
  assert tfrecord_index.save(entries[2], wrong,
                             tfrecord_index.file_stat(shard))
  scans = []
  real_scan = tfrecord_index.scan_file
  monkeypatch.setattr(tfrecord_index, 'scan_file',
                      lambda *a, **k: scans.append(a[0]) or real_scan(*a, **k))
  again = decoded(sources.open_source('cj_tfr', 'train', data_dir=root),
                  list(range(NUM_TRAIN)))
  assert len(scans) == 3
  for a, b in zip(again, reference, strict=True):
    assert_same(a, b)
  assert open(entries[0], 'rb').read() == good
  # Valid entries are used as they are: no scan.
  sources.open_source('cj_tfr', 'train', data_dir=root)
  assert len(scans) == 3


def test_read_only_dataset_caches_in_the_user_cache(data_dir, tmp_path,
                                                    monkeypatch):
  root, version_dir = copy_of(data_dir, tmp_path)
  # A file where the cache directory would go: it cannot be created (a
  # chmod would not stop root).
  with open(os.path.join(version_dir, tfrecord_index.CACHE_SUBDIR), 'w'):
    pass
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  source = sources.open_source('cj_tfr', 'test', data_dir=root)
  assert source.num_examples == NUM_TEST
  user_cache = tmp_path / 'cache' / 'contrastive_jax' / 'tfrecord_offsets'
  assert len(os.listdir(user_cache)) == 3


def test_truncated_shard_is_one_clear_error(data_dir, tmp_path):
  root, version_dir = copy_of(data_dir, tmp_path)
  shard = os.path.join(version_dir, 'cj_tfr-train.tfrecord-00001-of-00003')
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) - 30)
  with pytest.raises(DataError) as e:
    sources.open_source('cj_tfr', 'train[:50%]', data_dir=root)
  message = str(e.value)
  assert '\n' not in message
  assert shard in message and 'runs past the end' in message
  # A split that does not read the damaged shard still opens.
  assert sources.open_source('cj_tfr', 'test', data_dir=root).num_examples


def test_shard_with_other_records_than_the_metadata_says(data_dir, tmp_path):
  root, version_dir = copy_of(data_dir, tmp_path)
  shard = os.path.join(version_dir, 'cj_tfr-test.tfrecord-00000-of-00003')
  write_records(shard, [b'a', b'b', b'c', b'd', b'e'])
  with pytest.raises(DataError, match='holds 5 records where the dataset '
                     'metadata says 2'):
    sources.open_source('cj_tfr', 'test', data_dir=root)
