"""Reading an image folder: bad files and the pretraining stream, on real
files written with PIL (layouts, file types: tests/test_folder_source.py;
the index: tests/test_folder_index.py)."""

import concurrent.futures
import io
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from contrastive_jax.data import pipeline
from contrastive_jax.data.sources import folder, folder_index
from contrastive_jax.errors import DataError
# Fixtures (used by name) and helpers of the folder tests.
from tests.test_folder_source import (decoded, fresh_listings,  # noqa: F401  pylint: disable=unused-import
                                      imagenet_tree, open_folder, photo,
                                      save)

SPEC = 'random_resized_crop(8)|flip_lr'


# Bad files.


@pytest.fixture
def damaged_folder(tmp_path, photo):
  """An unlabelled folder: good and bad files, and their stand-ins."""
  good = lambda name: save(str(tmp_path / name), photo)
  jpeg = io.BytesIO()
  Image.fromarray(photo).save(jpeg, 'JPEG')
  good('a_good.png')
  (tmp_path / 'b_truncated.jpg').write_bytes(jpeg.getvalue()[:600])
  (tmp_path / 'c_empty.png').write_bytes(b'')
  (tmp_path / 'd_garbage.jpg').write_bytes(b'<html>not an image</html>' * 50)
  save(str(tmp_path / 'e_good.png'), 255 - photo)
  save(str(tmp_path / 'f_locked.png'), photo[::-1])
  save(str(tmp_path / 'g_good.png'), photo[:, ::-1])
  good('h_deleted.png')
  (tmp_path / 'z_truncated.png').write_bytes(
      (tmp_path / 'a_good.png').read_bytes()[:-100])
  source = open_folder(tmp_path, max_bad_fraction=1.0)
  os.chmod(tmp_path / 'f_locked.png', 0)
  locked = not os.access(tmp_path / 'f_locked.png', os.R_OK)  # Not as root.
  os.remove(tmp_path / 'h_deleted.png')
  # Index -> the index whose file it reads.
  stand_ins = {0: 0, 1: 4, 2: 4, 3: 4, 4: 4, 5: 6 if locked else 5, 6: 6,
               7: 0, 8: 0}
  yield source, stand_ins
  os.chmod(tmp_path / 'f_locked.png', 0o644)


def test_bad_files_read_the_next_good_file_and_are_counted_once(
    damaged_folder):
  source, stand_ins = damaged_folder
  examples = decoded(source)
  for i, j in stand_ins.items():
    np.testing.assert_array_equal(examples[i]['image'], examples[j]['image'])
  bad = sorted(i for i, j in stand_ins.items() if i != j)
  assert source.input_metrics() == {'bad_images': len(bad)}
  # Again, in a parallel tf.data read: the same pixels, no new count.
  again = list(source.sequential().as_numpy_iterator())
  for first, second in zip(examples, again):
    np.testing.assert_array_equal(first['image'], second['image'])
  assert source.input_metrics() == {'bad_images': len(bad)}
  reasons = source.bad_files()
  assert set(reasons) == {source.example_ids()[i] for i in bad}
  assert reasons[source.example_ids()[2]] == 'empty file'
  assert reasons[source.example_ids()[7]].startswith('unreadable')
  assert reasons[source.example_ids()[1]].startswith('damaged JPEG')


def test_too_many_bad_files_stop_the_run_naming_some(damaged_folder):
  source, _ = damaged_folder
  decoded(source)
  source.max_bad_fraction = 0.7
  assert source.input_metrics()['bad_images'] in (5, 6)  # 6 unless root.
  source.max_bad_fraction = 0.1
  with pytest.raises(DataError, match=r"^\d of the 9 images of split 'train' "
                     r'of folder:.* are unreadable or damaged, more than '
                     r'config.data.max_bad_fraction=0.1 \(e.g. .*b_truncated'
                     r'.jpg, .*c_empty.png, .*d_garbage.jpg, ...\)'):
    source.input_metrics()
  # Process 1 of 4 reads ~1/4 of the split (here: all of it, via decoded):
  # its 5 or 6 bad files are more than 0.7 of that.
  quarter = folder.FolderSource(source.index, max_bad_fraction=0.7,
                                process_index=1, process_count=4)
  decoded(quarter)
  with pytest.raises(DataError, match=r'^\d of the ~2 images this process '
                     "reads of split 'train'"):
    quarter.input_metrics()


def test_parallel_reads_count_and_log_a_bad_file_once(tmp_path, photo,
                                                    caplog):
  for k in range(8):
    save(str(tmp_path / f'{k}.png'), photo)
  (tmp_path / '3.png').write_bytes(b'')
  source = open_folder(tmp_path, max_bad_fraction=1.0)
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda _: source._read_many(np.arange(8)), range(32)))
  assert source.input_metrics() == {'bad_images': 1}
  logged = [r for r in caplog.records if '3.png: empty file' in r.getMessage()]
  assert len(logged) == 1


def test_a_split_of_only_bad_files_reads_a_black_pixel(tmp_path):
  (tmp_path / 'a.jpg').write_bytes(b'')
  (tmp_path / 'b.png').write_bytes(b'\x89PNG\r\n\x1a\n')
  source = open_folder(tmp_path, max_bad_fraction=1.0)
  for example in decoded(source):
    np.testing.assert_array_equal(example['image'],
                                  np.zeros((1, 1, 3), np.uint8))
  assert source.input_metrics() == {'bad_images': 2}


# The pretraining stream on a folder.


@pytest.fixture(scope='module')
def stream_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('stream')
  imagenet_tree(root, {'train': ['ant', 'bee', 'cat']}, files_per_class=6)
  (root / 'train' / 'bee' / '2.png').write_bytes(b'')  # One bad file.
  return str(root)


def _stream(root, batch=4, process_index=0, process_count=1, start_step=0):
  folder_index.forget_listings()
  source = open_folder(root, max_bad_fraction=0.5)
  return list(pipeline.as_numpy_iterator(pipeline.make_pretrain_dataset(
      source=source, local_batch_size=batch, view_specs=(SPEC, SPEC), seed=0,
      process_index=process_index, process_count=process_count,
      start_step=start_step).take(8 - start_step)))


def test_a_resumed_folder_stream_equals_the_uninterrupted_one(stream_folder):
  # 18 files, global batch 4: 4 steps per epoch; 8 steps cross an epoch.
  whole = _stream(stream_folder)
  assert whole[0]['view1'].shape == (4, 8, 8, 3)
  for k in (3, 6):
    for a, b in zip(whole[k:], _stream(stream_folder, start_step=k)):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_folder_stream_processes_concatenate_to_the_one_process_batch(
    stream_folder):
  whole = _stream(stream_folder)
  parts = [_stream(stream_folder, batch=2, process_index=i, process_count=2)
           for i in range(2)]
  for k, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][k][key], parts[1][k][key]]), batch[key])
