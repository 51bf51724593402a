"""An image folder's file index, stored in the run's workdir (its hash, a
resume on a changed folder, only process 0 writing, a damaged index, a full
disk), and the slices of a split that share it (layouts, labels and file
types: tests/test_folder_source.py)."""

import json
import os

import numpy as np
import pytest

from contrastive_jax.data import digits
from contrastive_jax.data.sources import folder, folder_index, folder_layout
from contrastive_jax.errors import ConfigError, DataError
# Fixtures (used by name) and helpers of the folder tests.
from tests.test_folder_source import (decoded, fresh_listings,  # noqa: F401  pylint: disable=unused-import
                                      imagenet_tree, open_folder, save)


# The run's file index.


def test_the_index_is_stored_in_the_workdir_with_its_hash(tmp_path):
  imagenet_tree(tmp_path / 'data', {'train': ['ant', 'bee']})
  workdir = tmp_path / 'run'
  source = open_folder(tmp_path / 'data', workdir=str(workdir))
  assert not workdir.exists()  # Opening only reads.
  source.commit()
  stored = json.loads((workdir / 'data_index' / 'train.json').read_text())
  files = ['ant/0.png', 'ant/1.png', 'bee/0.png', 'bee/1.png']
  assert stored['files'] == files and stored['num_files'] == 4
  assert stored['class_names'] == ['ant', 'bee']
  assert stored['sha256'] == folder_index.digest(files, ['ant', 'bee'])
  assert sorted(os.listdir(workdir / 'data_index')) == ['class_names.json',
                                                        'train.json']


def test_a_resume_on_a_changed_folder_stops_unless_allowed(tmp_path):
  data, workdir = tmp_path / 'data', str(tmp_path / 'run')
  imagenet_tree(data, {'train': ['ant', 'bee']})
  open_folder(data, workdir=workdir).commit()
  index = tmp_path / 'run' / 'data_index' / 'train.json'
  before = index.read_bytes()
  folder_index.forget_listings()
  assert open_folder(data, workdir=workdir).num_examples == 4  # Unchanged.
  os.remove(data / 'train' / 'ant' / '0.png')
  for name in ('2.png', '3.png'):
    save(str(data / 'train' / 'bee' / name), np.zeros((4, 4, 3), np.uint8))
  folder_index.forget_listings()
  with pytest.raises(DataError, match=r"split 'train' of folder:.* no longer "
                     r'matches the index .*train.json\): 2 files added, 1 '
                     r'removed \(e.g. added bee/2.png\); .*'
                     'allow_changed_files=True'):
    open_folder(data, workdir=workdir)
  assert index.read_bytes() == before
  source = open_folder(data, workdir=workdir, allow_changed_files=True)
  assert source.num_examples == 5
  source.commit()  # The run keeps the new index.
  assert json.loads(index.read_text())['num_files'] == 5
  folder_index.forget_listings()
  assert open_folder(data, workdir=workdir).num_examples == 5


def test_only_process_0_writes_and_a_damaged_index_is_an_error(tmp_path):
  data, workdir = tmp_path / 'data', tmp_path / 'run'
  imagenet_tree(data, {'train': ['ant']})
  index = folder_index.build(str(data), 'train', workdir=str(workdir))
  other = folder.FolderSource(index, workdir=str(workdir), process_index=1,
                              process_count=2)
  decoded(other, [0])
  other.commit()
  assert not workdir.exists()
  folder.FolderSource(index, workdir=str(workdir)).commit()
  stored_file = workdir / 'data_index' / 'train.json'
  stored = json.loads(stored_file.read_text())
  stored['files'][0] = 'ant/9.png'
  stored_file.write_text(json.dumps(stored))
  with pytest.raises(DataError, match='train.json is damaged .* delete it'):
    open_folder(data, workdir=str(workdir))


def test_a_full_disk_is_one_data_error_when_the_index_is_kept(
    tmp_path, monkeypatch):
  imagenet_tree(tmp_path / 'data', {'train': ['ant']})
  source = open_folder(tmp_path / 'data', workdir=str(tmp_path / 'run'))

  def full(path, text):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(folder_index, '_write_atomic', full)
  with pytest.raises(DataError, match='cannot keep the file index of '
                     'folder:.* in .*run: No space left on device'):
    source.commit()
  (tmp_path / 'run2').write_text('a file, not a directory')
  with pytest.raises(DataError, match='cannot read .*run2/data_index/'
                     'class_names.json: Not a directory'):
    open_folder(tmp_path / 'data', workdir=str(tmp_path / 'run2'))


# Slices.


def test_slices_are_stratified_nested_and_share_the_splits_index(tmp_path):
  imagenet_tree(tmp_path / 'data', {'train': ['ant', 'bee', 'cat']},
                files_per_class=10)
  workdir = str(tmp_path / 'run')
  whole = open_folder(tmp_path / 'data', workdir=workdir)
  whole.commit()
  labels = np.array([e['label'] for e in decoded(whole)])
  ids = {}
  for split, count in [('train[:10%]', 3), ('train[:30%]', 9),
                       ('train[:7]', 7), ('train[7:]', 23),
                       ('train[10%:20%]', 3)]:
    part = open_folder(tmp_path / 'data', split, workdir=workdir)
    assert part.num_examples == count, split
    ids[split] = part.example_ids()
    assert ids[split] == sorted(ids[split])  # Index order.
  for split in ('train[:10%]', 'train[:30%]'):
    positions = [whole.example_ids().index(p) for p in ids[split]]
    counts = np.bincount(labels[positions], minlength=3)
    assert (counts == counts[0]).all(), (split, counts)
  assert set(ids['train[:10%]']) < set(ids['train[:30%]'])
  assert set(ids['train[:7]']) | set(ids['train[7:]']) == set(
      whole.example_ids())
  assert sorted(os.listdir(os.path.join(workdir, 'data_index'))) == [
      'class_names.json', 'train.json']
  with pytest.raises(ConfigError, match=r'train\[:0\].* holds no examples'):
    open_folder(tmp_path / 'data', 'train[:0]')


def test_parse_split():
  assert folder_layout.parse_split('train') == ('train', None, None)
  assert folder_layout.parse_split('train[:10%]') == (
      'train', None, (10, True))
  assert folder_layout.parse_split('val[5:100]') == (
      'val', (5, False), (100, False))
  assert folder_layout.slice_bounds(1281, None, (1, True)) == (0, 13)
  for bad in ('', 'train[10]', 'train[:%]', 'train[:-1]'):
    with pytest.raises(ConfigError):
      folder_layout.parse_split(bad)
  with pytest.raises(ConfigError, match="at most 100%, got 200%"):
    folder_layout.parse_split('train[:200%]')
  with pytest.raises(ConfigError, match="at most 100%, got 150%"):
    digits.load_digits_split('train[:150%]')
