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
checks look never stops a run. Example i is then read from the next good
file after it (wrapping around), with that file's label, so every batch
keeps its shape and the stream stays a pure function of the files: a
resume, or another process, replaces it the same way. Each bad file is
logged once; `input_metrics()` counts the distinct bad files this process
met so far and raises a DataError once they exceed `max_bad_fraction` of
the examples it reads (its 1/P of the split in a run of P processes; the
loop calls it at every log step).
"""

import concurrent.futures
import io
import os
import sys
import threading

from absl import logging
import numpy as np
import tensorflow as tf

from contrastive_jax.data.sources import folder_index
from contrastive_jax.data.sources import folder_listing
from contrastive_jax.data.sources import image_bytes
from contrastive_jax.data.sources.base import Source, read_group
from contrastive_jax.errors import ConfigError, DataError

PREFIX = 'folder:'
DEFAULT_MAX_BAD_FRACTION = 0.001
# Bad files named in the DataError.
_NAMED = 3
# What a split whose every file is bad reads: one black pixel (unless
# max_bad_fraction is 1, the run stops at the next log step).
_BLACK = image_bytes.png_via_pil(
    b'P6 1 1 255\n\0\0\0')  # A 1x1 PPM, which PIL reads.


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
    self.max_bad_fraction = max_bad_fraction
    self._process_count = process_count
    self.index = index  # What it reads: the split's files and labels.
    self._directory = index.directory
    self._files = index.files
    self._labels = index.labels
    self._remote = folder_listing.is_remote(index.directory)
    # Index -> why it is bad. tf.data reads groups in parallel threads.
    self._bad = {}
    self._lock = threading.Lock()
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

  def input_metrics(self):
    with self._lock:
      bad = dict(self._bad)
    # Each process meets the bad files of the examples it reads: 1/P.
    share = self.num_examples / self._process_count
    if len(bad) > self.max_bad_fraction * share:
      named = ', '.join(self.path(i) for i in sorted(bad)[:_NAMED])
      of = (f'the {self.num_examples} images' if self._process_count == 1
            else f'the ~{share:.0f} images this process reads')
      raise DataError(
          f'{len(bad)} of {of} of split {self.split!r} of {self.dataset} are '
          'unreadable or damaged, more than '
          f'config.data.max_bad_fraction={self.max_bad_fraction} (e.g. '
          f'{named}{", ..." if len(bad) > _NAMED else ""}); fix or remove '
          'them, or raise max_bad_fraction')
    return {'bad_images': len(bad)}

  def bad_files(self) -> dict:
    """{path: why} of the bad files met so far."""
    with self._lock:
      return {self.path(i): why for i, why in sorted(self._bad.items())}

  def _read_many(self, indices):
    indices = indices.tolist()
    if self._pool is not None:
      checked = list(self._pool.map(self._checked, indices))
    else:
      checked = [self._checked(i) for i in indices]
    encoded, labels = [], []
    for i, data in zip(indices, checked):
      source = i
      if data is None:
        source, data = self._stand_in(i)
      encoded.append(data)
      labels.append(self._labels[source])
    return np.array(encoded, dtype=object), np.array(labels, np.int64)

  def _checked(self, i):
    """File i's bytes ready for `decode`, or None when it is bad."""
    if i in self._bad:  # Known bad: do not read it again.
      return None
    try:
      data = _read_bytes(self.path(i))
    except (OSError, tf.errors.OpError) as e:  # Local, or tf.io.gfile.
      self._mark_bad(i, f'unreadable ({folder_listing.first_line(e)})')
      return None
    data, why = image_bytes.for_tensorflow(data)
    if data is None:
      self._mark_bad(i, why)
    return data

  def _stand_in(self, i):
    """(index, bytes) of the first good file after i, wrapping around."""
    for step in range(1, self.num_examples):
      j = (i + step) % self.num_examples
      data = self._checked(j)
      if data is not None:
        return j, data
    return i, _BLACK

  def _mark_bad(self, i, why):
    with self._lock:
      if i in self._bad:
        return
      self._bad[i] = why
      count = len(self._bad)
    logging.warning('%s: %s; example %d of split %r reads the next good file '
                    'instead (%d bad so far)', self.path(i), why, i,
                    self.split, count)


def _read_bytes(path):
  if folder_listing.is_remote(path):
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  with io.open(path, 'rb') as f:  # This module's `open` is the registry's.
    return f.read()


def _process():
  """(process index, process count). A multi-process run has started JAX
  before it opens its data; a tool that never imported JAX is one process."""
  jax = sys.modules.get('jax')
  return (jax.process_index(), jax.process_count()) if jax else (0, 1)


def _options(options):
  max_bad = options.get('max_bad_fraction', DEFAULT_MAX_BAD_FRACTION)
  if (isinstance(max_bad, bool) or not isinstance(max_bad, (int, float)) or
      not 0 <= max_bad <= 1):
    raise ConfigError(f'config.data.max_bad_fraction={max_bad!r} is invalid: '
                      'must be a number in [0, 1]')
  allow = options.get('allow_changed_files', False)
  if not isinstance(allow, bool):
    raise ConfigError(f'config.data.allow_changed_files={allow!r} is '
                      'invalid: must be True or False')
  return float(max_bad), allow


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
  process_index, process_count = _process()
  return FolderSource(index, max_bad_fraction=max_bad, workdir=workdir,
                      process_index=process_index,
                      process_count=process_count)
