"""A directory (or gs:// path) of image files as a `Source`: folder:PATH.

Which files form a split, their order and labels: folder_index.py and
folder_layout.py. Opening a split only reads (a run that stops on bad input
leaves its workdir as it was); the split's file index is kept in the
workdir when the loop calls `commit()`, once the workdir is made.

Reading: a group of files per Python call (`read`), their bytes checked
there (image_bytes.py); images are decoded per example in tf.data's
parallel map (`decode`). JPEG, PNG, BMP and GIF (its first frame) of any
mode (grey, RGBA, CMYK, 16 bit) become uint8 RGB.

Bad files: a file that cannot be read, is empty, or is damaged where the
checks look never stops a run; it follows the policy every source of
encoded images shares (`base.BadImages`): example i reads the next good
file after it (wrapping around), with that file's label; each bad file is
logged once and counted, and `input_metrics()` raises a DataError once they
exceed `max_bad_fraction` of the examples this process reads.
"""

import concurrent.futures
import io
import os
import threading

import numpy as np
import tensorflow as tf

from contrastive_jax.config import defaults as config_defaults
from contrastive_jax.data.sources import folder_index
from contrastive_jax.data.sources import folder_listing
from contrastive_jax.data.sources import base
from contrastive_jax.data.sources.base import Source, read_group
from contrastive_jax.errors import ConfigError, DataError

PREFIX = 'folder:'
DEFAULT_MAX_BAD_FRACTION = base.DEFAULT_MAX_BAD_FRACTION


class FolderSource(Source):
  """The files of a `folder_index.SplitIndex`."""

  def __init__(self, index: folder_index.SplitIndex, *,
               max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
               workdir: str | None = None, process_index: int = 0,
               process_count: int = 1):
    self.dataset, self.split = index.dataset, index.split
    self.class_names = index.class_names
    self.image_shape = (None, None, 3)
    self.num_examples = len(index.files)
    self.num_ignored = sum(index.ignored.values())
    self.index = index  # What it reads: the split's files and labels.
    self._directory = index.directory
    self._files = index.files
    self._labels = index.labels
    self._remote = folder_listing.is_remote(index.directory)
    self._bad = base.BadImages(
        dataset=self.dataset, split=self.split,
        num_examples=self.num_examples, name=self.path, unit='file',
        remedy='fix or remove them', max_fraction=max_bad_fraction,
        process_count=process_count)
    # Remote reads wait on round trips: a group's files are fetched at once.
    self._pool = (concurrent.futures.ThreadPoolExecutor(folder_listing.WORKERS)
                  if self._remote else None)
    # Process 0 alone keeps the index in the workdir.
    self._workdir = workdir if process_index == 0 else None
    self._committed = False
    self._commit_lock = threading.Lock()

  def commit(self):
    """Keeps the split's file index and the run's class names in the
    workdir (process 0; once)."""
    with self._commit_lock:
      if self._committed or self._workdir is None:
        return
      try:
        folder_index.store(self.index, self._workdir)
      except (OSError, tf.errors.OpError) as e:  # Local, or tf.io.gfile.
        raise DataError(f'cannot keep the file index of {self.dataset} in '
                        f'{self._workdir}: {folder_listing.first_line(e)}'
                        ) from None
      self._committed = True

  def path(self, index: int) -> str:
    return folder_listing.join(self._directory, self._files[index])

  def example_ids(self):
    return [self.path(i) for i in range(self.num_examples)]

  def read(self, indices):
    return read_group(self._read_many, indices)

  def decode(self, record):
    image = tf.io.decode_image(record['encoded'], channels=3,
                               expand_animations=False)
    return {'image': tf.ensure_shape(image, [None, None, 3]),
            'label': record['label']}

  @property
  def max_bad_fraction(self) -> float:
    return self._bad.max_fraction

  @max_bad_fraction.setter
  def max_bad_fraction(self, value: float):
    self._bad.max_fraction = value

  def input_metrics(self):
    return self._bad.metrics()

  def bad_files(self) -> dict:
    """{path: why} of the bad files met so far."""
    return {self.path(i): why for i, why in self._bad.reasons().items()}

  def _read_many(self, indices):
    indices = indices.tolist()
    if self._pool is not None:
      checked = list(self._pool.map(self._checked, indices))
    else:
      checked = [self._checked(i) for i in indices]
    encoded, labels = [], []
    for i, data in zip(indices, checked):
      label = self._labels[i]
      if data is None:
        data, label = self._bad.stand_in(i, label, self._read_one)
      encoded.append(data)
      labels.append(label)
    return np.array(encoded, dtype=object), np.array(labels, np.int64)

  def _read_one(self, i):
    return self._checked(i), self._labels[i]

  def _checked(self, i):
    """File i's bytes ready for `decode`, or None when it is bad."""
    if self._bad.is_bad(i):  # Known bad: do not read it again.
      return None
    try:
      data = _read_bytes(self.path(i))
    except (OSError, tf.errors.OpError) as e:  # Local, or tf.io.gfile.
      self._bad.mark(i, f'unreadable ({folder_listing.first_line(e)})')
      return None
    return self._bad.check(i, data)


def _read_bytes(path):
  if folder_listing.is_remote(path):
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  with io.open(path, 'rb') as f:  # This module's `open` is the registry's.
    return f.read()


def _options(options):
  max_bad = base.max_bad_fraction(options)
  allow = options.get('allow_changed_files', config_defaults.field_default(
      'data.allow_changed_files'))
  if not isinstance(allow, bool):
    raise ConfigError(f'config.data.allow_changed_files={allow!r} is '
                      'invalid: must be True or False')
  return max_bad, allow


def open(dataset, split, *, data_dir=None, workdir=None, options=None):  # pylint: disable=redefined-builtin
  """The `FolderSource` of `split` of 'folder:PATH'. `data_dir` is unused
  (PATH is a path of its own); `workdir` keeps the run's file index."""
  del data_dir
  root = dataset[len(PREFIX):] if dataset.startswith(PREFIX) else dataset
  if not root.strip():
    raise ConfigError(f'dataset {dataset!r}: expected folder:PATH, a '
                      'directory or gs:// path of images')
  if not folder_listing.is_remote(root):
    root = os.path.expanduser(root)
  root = root.rstrip('/') or '/'
  max_bad, allow = _options(dict(options or {}))
  index = folder_index.build(root, split, workdir=workdir,
                             allow_changed_files=allow)
  process_index, process_count = base.process()
  return FolderSource(index, max_bad_fraction=max_bad, workdir=workdir,
                      process_index=process_index,
                      process_count=process_count)
