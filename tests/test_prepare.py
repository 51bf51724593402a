"""`python -m contrastive_jax.prepare`: TFRecord -> ArrayRecord conversion
in place (the same examples in the same order, nothing lost on failure),
the download path's one-line failures (manual download, unknown name, no
network) and packing an image folder. Offline, on real TFDS datasets the
tests write with the TFDS writer."""

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
import types

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax import prepare
from contrastive_jax.data import convert, pack_folder, sources
from contrastive_jax.errors import ConfigError, DataError
from tests.test_tfrecord_source import noise_images, store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ('train', 'test', 'train[5:25]')


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """A TFRecord dataset 'cj_conv' (3 shards a split) and its examples per
  split, read through the TFRecord source before any conversion."""
  root = str(tmp_path_factory.mktemp('tfds'))
  store('cj_conv', root, {'train': noise_images(30, 0),
                          'test': noise_images(7, 1)}, 'tfrecord',
        num_shards=3)
  return root, {split: examples(root, split) for split in SPLITS}


def examples(root, split):
  return list(sources.open_source('cj_conv', split, data_dir=root)
              .sequential().as_numpy_iterator())


def fresh_copy(prepared, tmp_path):
  root, expected = prepared
  copy = str(tmp_path / 'tfds')
  shutil.copytree(root, copy)
  return copy, os.path.join(copy, 'cj_conv', '1.0.0'), expected


def snapshot(directory):
  found = {}
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        found[name] = hashlib.sha256(f.read()).hexdigest()
  return found


def assert_reads(root, expected, kind):
  for split, want in expected.items():
    source = sources.open_source('cj_conv', split, data_dir=root)
    assert type(source).__name__ == kind
    got = list(source.sequential().as_numpy_iterator())
    for a, b in zip(got, want, strict=True):
      np.testing.assert_array_equal(a['image'], b['image'])
      assert a['label'] == b['label']


def test_convert_rewrites_the_same_examples_as_array_record(prepared,
                                                            tmp_path):
  root, version_dir, expected = fresh_copy(prepared, tmp_path)
  message = convert.convert('cj_conv', root)
  assert message.startswith('converted cj_conv to ArrayRecord')
  assert_reads(root, expected, 'ArrayRecordSource')
  names = os.listdir(version_dir)
  assert not [n for n in names if 'tfrecord' in n or 'incomplete' in n]
  assert len([n for n in names if '.array_record-' in n]) == 6
  builder = tfds.builder('cj_conv', data_dir=root)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert len(builder.as_data_source(split='train')) == 30
  assert 'already ArrayRecord' in convert.convert('cj_conv', root)


def test_convert_keeping_the_tfrecord_files(prepared, tmp_path):
  root, version_dir, expected = fresh_copy(prepared, tmp_path)
  convert.convert('cj_conv', root, keep_tfrecord=True)
  assert_reads(root, expected, 'ArrayRecordSource')
  builder = tfds.builder('cj_conv', data_dir=root)
  # tf.data readers keep the TFRecord files, random access the new ones.
  assert len(list(builder.as_dataset(split='test'))) == 7
  assert len(builder.as_data_source(split='test')) == 7
  assert 'already has ArrayRecord files' in convert.convert('cj_conv', root)


def test_a_failed_conversion_leaves_the_dataset_as_it_was(prepared,
                                                          tmp_path):
  root, version_dir, expected = fresh_copy(prepared, tmp_path)
  shard = os.path.join(version_dir, 'cj_conv-test.tfrecord-00002-of-00003')
  with open(shard, 'r+b') as f:  # A flipped payload byte: a CRC mismatch.
    f.seek(20)
    byte = f.read(1)
    f.seek(20)
    f.write(bytes([byte[0] ^ 0xFF]))
  before = snapshot(version_dir)
  with pytest.raises(DataError, match="could not convert 'cj_conv', left "
                     'unchanged') as e:
    convert.convert('cj_conv', root, workers=1)
  assert '\n' not in str(e.value)
  assert snapshot(version_dir) == before
  # A leftover of an interrupted run is cleared by the next one.
  leftover = os.path.join(version_dir, 'incomplete.' + 'a' * 32 +
                          '.cj_conv-train.array_record-00000-of-00003')
  with open(leftover, 'wb') as f:
    f.write(b'half')
  shutil.copy(os.path.join(prepared[0], 'cj_conv', '1.0.0',
                           os.path.basename(shard)), shard)
  convert.convert('cj_conv', root)
  assert not os.path.exists(leftover)
  assert_reads(root, expected, 'ArrayRecordSource')


def run_prepare(*args):
  """`python -m contrastive_jax.prepare ARGS`, in process: its exit status,
  stdout and stderr."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    status = prepare.run(['prepare', *args])
  return types.SimpleNamespace(returncode=status, stdout=out.getvalue(),
                               stderr=err.getvalue())


def last_line(text):
  return [line for line in text.splitlines() if line.strip()][-1]


def test_command_line_convert_and_a_bad_input_row(prepared, tmp_path):
  root, _, expected = fresh_copy(prepared, tmp_path)
  done = run_prepare('cj_conv', f'--data_dir={root}', '--convert')
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'converted cj_conv to ArrayRecord' in done.stdout
  assert_reads(root, expected, 'ArrayRecordSource')
  empty = tmp_path / 'empty'
  empty.mkdir()
  bad = run_prepare('imagenet2012', f'--data_dir={empty}')
  assert bad.returncode == 2
  assert 'Traceback' not in bad.stderr
  assert bad.stderr.count('error:') == 1
  assert last_line(bad.stderr).startswith(
      "error: dataset 'imagenet2012' needs a manual download into "
      f'{empty}/downloads/manual: manual_dir should contain two files: '
      'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.')
  usage = run_prepare('cifar10', 'mnist')
  assert (usage.returncode, last_line(usage.stderr)) == (
      2, 'error: expected one dataset name: python -m contrastive_jax.prepare '
      'NAME [--data_dir=DIR] [--convert], or --folder=PATH --name=NAME')
  helped = run_prepare('--help')
  assert helped.returncode == 0
  assert helped.stdout.startswith('usage: python -m contrastive_jax.prepare')


def test_manual_download_dataset_gets_its_instructions(tmp_path):
  with pytest.raises(DataError) as e:
    prepare.download_and_prepare('imagenet2012', str(tmp_path))
  message = str(e.value)
  assert '\n' not in message
  assert f'{tmp_path}/downloads/manual' in message
  assert 'ILSVRC2012_img_val.tar' in message
  assert 'python -m contrastive_jax.prepare imagenet2012' in message
  assert not os.listdir(tmp_path)  # Nothing created.


@pytest.mark.parametrize('name,expected', [
    ('no_such_dataset', "'no_such_dataset' is neither 'digits'"),
    ('mnist:9.9.9', 'cannot be loaded at version 9.9.9'),
])
def test_unknown_name_is_one_line(tmp_path, name, expected):
  with pytest.raises(ConfigError, match=expected) as e:
    prepare.download_and_prepare(name, str(tmp_path))
  assert '\n' not in str(e.value)


def test_no_network_fails_fast_with_one_line(tmp_path, monkeypatch):
  # No network, whatever this machine has: every request goes to a proxy
  # on a closed port.
  for var in ('HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy'):
    monkeypatch.setenv(var, 'http://127.0.0.1:9')
  for var in ('NO_PROXY', 'no_proxy'):
    monkeypatch.delenv(var, raising=False)
  # What was there before stays; what the download made goes.
  (tmp_path / 'downloads').mkdir()
  (tmp_path / 'downloads' / 'mine.zip').write_bytes(b'x')
  (tmp_path / 'other_dataset').mkdir()
  start = time.monotonic()
  with pytest.raises(DataError, match="could not download and prepare "
                     "dataset 'mnist'.*cannot reach") as e:
    prepare.download_and_prepare('mnist', str(tmp_path))
  assert time.monotonic() - start < 30
  assert '\n' not in str(e.value)
  assert not tfds.builder('mnist', data_dir=str(tmp_path)).is_prepared()
  assert sorted(os.listdir(tmp_path)) == ['downloads', 'other_dataset']
  assert os.listdir(tmp_path / 'downloads') == ['mine.zip']
  empty = tmp_path / 'empty'
  with pytest.raises(DataError):
    prepare.download_and_prepare('mnist', str(empty))
  assert not empty.exists() or os.listdir(empty) == []


def test_digits_and_prepared_datasets_need_nothing(prepared):
  assert prepare.download_and_prepare('digits') is False
  assert prepare.download_and_prepare('cj_conv', prepared[0]) is False


def image_folder(root):
  """root/{train,val}/{cat,dog}/: PNGs and JPEGs, one damaged file.
  Returns {relative path: uint8 pixels} of the good files."""
  pixels = {}
  for split, count in (('train', 5), ('val', 2)):
    for c, label in enumerate(('cat', 'dog')):
      directory = os.path.join(root, split, label)
      os.makedirs(directory)
      for i, image in enumerate(noise_images(count, seed=10 * c + count)):
        name = f'{split}/{label}/{i}.png'
        Image.fromarray(image).save(os.path.join(root, name))
        pixels[name] = image
      jpeg = f'{split}/{label}/photo.jpg'
      Image.fromarray(noise_images(1, seed=c)[0]).save(
          os.path.join(root, jpeg), quality=95)
      pixels[jpeg] = tf.io.decode_jpeg(
          tf.io.read_file(os.path.join(root, jpeg))).numpy()
  with open(os.path.join(root, 'train', 'dog', 'broken.jpg'), 'wb') as f:
    f.write(b'not an image')
  return pixels


def test_pack_folder(tmp_path):
  folder, data_dir = str(tmp_path / 'images'), str(tmp_path / 'tfds')
  pixels = image_folder(folder)
  message = pack_folder.pack(folder, 'cj_packed', data_dir)
  assert 'train 12, val 6 images' in message
  assert 'left out 1 unreadable' in message
  builder = tfds.builder('cj_packed', data_dir=data_dir)
  assert builder.info.features['label'].names == ['cat', 'dog']
  for split in ('train', 'val'):
    source = sources.open_source('cj_packed', split, data_dir=data_dir)
    records = builder.as_data_source(split=split)
    got = list(source.sequential().as_numpy_iterator())
    assert len(got) == len(records)
    for example, record in zip(got, records):
      name = record['file_name'].decode()
      assert name.startswith(split + '/')
      np.testing.assert_array_equal(example['image'], pixels.pop(name))
      assert example['label'] == ('cat', 'dog').index(name.split('/')[1])
  assert not pixels
  with pytest.raises(ConfigError, match='already exists'):
    pack_folder.pack(folder, 'cj_packed', data_dir)
  with pytest.raises(ConfigError, match='is a TFDS dataset of its own'):
    pack_folder.pack(folder, 'mnist', data_dir)
  with pytest.raises(ConfigError, match='expected a dataset name'):
    pack_folder.pack(folder, 'Bad-Name', data_dir)
  assert json.load(open(os.path.join(
      data_dir, 'cj_packed', '1.0.0', 'dataset_info.json')))[
          'fileFormat'] == 'array_record'
