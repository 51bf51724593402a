"""TFDS datasets prepared as TFRecord (what `tfds build` and older TFDS
versions write), read by index like ArrayRecord, so that training resumes
exactly without preparing hundreds of GB again.

Example i of the split is record j of one shard, through the split's file
instructions (which also resolve slices such as 'train[:10%]'); each shard's
record offsets come from a one-time scan of its headers, cached
(tfrecord_index.py). A group of serialized tf.train.Examples is read and
parsed per Python call (~10-25 us an example), leaving the image encoded,
so that each image's bytes are checked and a record that cannot be read is
named (tfds_common.TFDSSource); `decode` decodes one image, as the
ArrayRecord reader does.
"""

import concurrent.futures
import os
import struct
import threading

from google.protobuf import message
import numpy as np
import tensorflow as tf

from contrastive_jax.data.sources import tfds_common
from contrastive_jax.data.sources import tfrecord_index
from contrastive_jax.errors import DataError

# Shards scanned at once when their offsets are not cached yet (the scan
# waits on the disk or the network more than on Python).
_SCAN_THREADS = 8


class TFRecordSource(tfds_common.TFDSSource):

  def __init__(self, builder, dataset: str, split: str, options=None):
    super().__init__(builder, dataset, split, options)
    _check_encoded_image(dataset, builder.info.features)
    instructions = builder.info.splits[split].file_instructions
    self._paths = sorted({i.filename for i in instructions})
    shard_offsets = self._index(dataset, builder, instructions)
    empty = np.zeros(0, np.int64)
    starts, lengths, files = [empty], [empty], [empty.astype(np.int32)]
    for instruction in instructions:
      found = shard_offsets[instruction.filename]
      window = slice(instruction.skip, instruction.skip + instruction.take)
      starts.append(found[:-1][window])
      lengths.append(np.diff(found)[window] - tfrecord_index.OVERHEAD_BYTES)
      files.append(np.full(instruction.take,
                           self._paths.index(instruction.filename), np.int32))
    self._starts = np.concatenate(starts).astype(np.int64)
    self._lengths = np.concatenate(lengths).astype(np.int64)
    self._files = np.concatenate(files)
    self.num_examples = len(self._starts)
    # Remote files keep one open handle per reading thread (each open is a
    # request); local files are opened per group, so that no number of
    # shards runs into the open-file limit.
    self._handles = threading.local()

  def _index(self, dataset, builder, instructions):
    """{shard path: uint64 offsets} for the shards the split reads."""
    lengths = {i.filename: i.examples_in_shard for i in instructions}

    def one(path):
      try:
        return tfrecord_index.offsets(path, lengths[path])
      except (tfrecord_index.CorruptFile, OSError, tf.errors.OpError) as e:
        detail = getattr(e, 'message', None) or str(e)
        raise DataError(
            f'dataset {dataset!r}: TFRecord shard {path} is unreadable or '
            f'damaged: {detail.splitlines()[0]}; '
            f'{tfds_common.prepare_again(builder, dataset)}') from None

    with concurrent.futures.ThreadPoolExecutor(
        max(1, min(_SCAN_THREADS, len(lengths)))) as pool:
      return dict(zip(lengths, pool.map(one, lengths)))

  def _fetch(self, indices):
    encoded, labels = [], []
    for index, record in zip(indices, self._serialized(np.asarray(indices))):
      try:
        feature = tf.train.Example.FromString(record).features.feature
        encoded.append(feature['image'].bytes_list.value[0])
        labels.append(feature['label'].int64_list.value[0]
                      if self.labelled else -1)
      except (message.DecodeError, IndexError) as e:
        what = 'an image and a label' if self.labelled else 'an image'
        raise self.unreadable(
            index, f'not a tf.train.Example holding {what} '
            f'({tfds_common.first_line(e)})') from None
    return encoded, labels

  def _serialized(self, indices):
    """Serialized examples of int64 [G] indices, as a [G] object array."""
    out = np.empty(len(indices), object)
    files = self._files[indices]
    # Grouped by shard: one open per shard per group.
    for file_id in np.unique(files):
      path = self._paths[file_id]
      positions = np.flatnonzero(files == file_id)
      k = positions[0]
      try:
        with self._opened(path) as read_at:
          for k in positions:
            start = self._starts[indices[k]]
            length = self._lengths[indices[k]]
            record = read_at(int(start), int(length) + _HEADER)
            if (len(record) != length + _HEADER or
                _LENGTH.unpack_from(record)[0] != length):
              raise self.unreadable(
                  int(indices[k]), f'{path} is damaged or changed since its '
                  f'record offsets were computed (record at byte {start}; a '
                  'restart indexes it again)')
            out[k] = record[_HEADER:]
      except (OSError, tf.errors.OpError) as e:  # Local, or tf.io.gfile.
        raise self.unreadable(int(indices[k]),
                              tfds_common.first_line(e)) from None
    return out

  def _opened(self, path):
    if tfrecord_index.is_local(path):
      return _LocalFile(path)
    handles = self._handles.__dict__.setdefault('files', {})
    if path not in handles:
      handles[path] = tf.io.gfile.GFile(path, 'rb')
    return _RemoteFile(handles[path])


_HEADER = tfrecord_index.HEADER_BYTES
_LENGTH = struct.Struct('<Q')


class _LocalFile:
  """`read_at` on a local file, closed when the group is read (pread does
  not move a shared position: threads never interfere)."""

  def __init__(self, path):
    self._path = path

  def __enter__(self):
    self._fd = os.open(self._path, os.O_RDONLY)
    return lambda offset, count: os.pread(self._fd, count, offset)

  def __exit__(self, *exc):
    os.close(self._fd)


class _RemoteFile:
  """`read_at` on this thread's open GFile."""

  def __init__(self, f):
    self._f = f

  def __enter__(self):
    def read_at(offset, count):
      self._f.seek(offset)
      return self._f.read(count)
    return read_at

  def __exit__(self, *exc):
    pass


def _check_encoded_image(dataset, features):
  """A DataError unless the examples hold the image as encoded bytes."""
  image = features.get_serialized_info()['image']
  if image.dtype != tf.string or tuple(image.shape) != ():
    raise DataError(f"dataset {dataset!r}: its 'image' feature is not stored "
                    'as encoded image bytes; only encoded images are read')
