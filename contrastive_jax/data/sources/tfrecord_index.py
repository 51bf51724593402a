"""Where each record of a TFRecord file starts: random access to a format
that has no index of its own.

A TFRecord file is a sequence of records
  [uint64 length][uint32 crc of the length][data][uint32 crc of the data]
(little-endian). Walking the length fields, skipping each payload, gives
every record's offset for one 8-byte read per record. Files of large
records are read that way (a few pages per record instead of the whole
file); files of small records, and remote files (gs://..., where every seek
is a request), are streamed in large reads instead.

The offsets are computed once per file and cached (`offsets`): next to the
data when that directory is writable, so that every later run and every
process finds them, else in the user's cache directory. A cache entry holds
the file's size and modification time and is used only when both still
match and its record count is the one dataset_info.json records; anything
else (stale, unreadable, half-written by another tool) is rebuilt. Entries
are written to a temporary name and renamed into place, so processes
building the same entry at once cannot corrupt it.
"""

import hashlib
import io
import os
import struct
import uuid

from absl import logging
import numpy as np
import tensorflow as tf

# Bytes around a record's data: length and its crc before, data crc after.
HEADER_BYTES = 12
OVERHEAD_BYTES = 16
# The cache directory's name next to the data, and the entries' layout.
CACHE_SUBDIR = 'tfrecord_offsets'
_CACHE_FORMAT = 1
# Bytes per read when streaming a file's headers.
_STREAM_CHUNK = 16 << 20
# Local files whose records average fewer bytes are streamed: measured on
# a VM disk with a cold page cache, seeking costs ~9 us per 2 KB record
# (streaming 4.5) but ~80 us per 110 KB record (streaming 350).
_SEEK_MIN_RECORD_BYTES = 16 << 10
_LENGTH = struct.Struct('<Q')


class CorruptFile(ValueError):
  """The file does not hold the records it should (truncated, not a
  TFRecord file, or another record count than the dataset's metadata)."""


def is_local(path: str) -> bool:
  return '://' not in str(path)


def scan(read_at, size: int) -> np.ndarray:
  """uint64 [n + 1]: the start of each of the file's n records, then `size`.

  `read_at(offset, count)` returns the file's bytes [offset, offset + count).
  Raises CorruptFile where a record runs past the end of the file.
  """
  offsets = []
  pos = 0
  while pos < size:
    header = read_at(pos, _LENGTH.size) if pos + HEADER_BYTES <= size else b''
    if len(header) < _LENGTH.size:
      raise CorruptFile(f'record {len(offsets)} at byte {pos} has no complete '
                        f'header ({size - pos} bytes left)')
    end = pos + _LENGTH.unpack(header)[0] + OVERHEAD_BYTES
    if end > size:
      raise CorruptFile(f'record {len(offsets)} at byte {pos} runs past the '
                        f'end of the file ({end} > {size} bytes)')
    offsets.append(pos)
    pos = end
  offsets.append(size)
  return np.array(offsets, np.uint64)


def file_stat(path: str) -> tuple[int, int]:
  """(size in bytes, modification time in ns): what a cache entry must
  match."""
  if is_local(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
  st = tf.io.gfile.stat(path)
  return st.length, st.mtime_nsec


def scan_file(path: str, size: int, num_records: int = 1, *,
              stream: bool | None = None):
  """`scan` of a file of about `num_records` records: seeks past large
  records of local files, streams the rest (or `stream` to choose)."""
  if stream is None:
    stream = (not is_local(path) or
              size < _SEEK_MIN_RECORD_BYTES * max(1, num_records))
  if not stream:
    fd = os.open(path, os.O_RDONLY)
    try:
      return scan(lambda offset, count: os.pread(fd, count, offset), size)
    finally:
      os.close(fd)
  with tf.io.gfile.GFile(path, 'rb') as f:
    return scan(_Window(f).read_at, size)


class _Window:
  """`read_at` over a file read in large forward chunks: headers come in
  increasing order, so each chunk serves every header it holds."""

  def __init__(self, f):
    self._f, self._start, self._data = f, 0, b''

  def read_at(self, offset, count):
    end = self._start + len(self._data)
    if offset < self._start or offset + count > end:
      self._f.seek(offset)
      self._start, self._data = offset, self._f.read(max(count, _STREAM_CHUNK))
    begin = offset - self._start
    return self._data[begin:begin + count]


def cache_paths(path: str) -> list[str]:
  """Where the offsets of `path` may be cached, in order of preference."""
  directory, name = os.path.split(str(path))
  key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return [os.path.join(directory, CACHE_SUBDIR, f'{name}.npz'),
          os.path.join(base, 'contrastive_jax', CACHE_SUBDIR,
                       f'{key}-{name}.npz')]


def offsets(path: str, num_records: int, *, stream: bool | None = None):
  """uint64 [num_records + 1] record offsets of `path` (see `scan`), from a
  valid cache entry or scanned and cached. Raises CorruptFile."""
  stat = file_stat(path)
  candidates = cache_paths(path)
  for cache in candidates:
    cached = load(cache, stat, num_records)
    if cached is not None and spot_check(path, cached):
      return cached
  built = scan_file(path, stat[0], num_records, stream=stream)
  if len(built) - 1 != num_records:
    raise CorruptFile(f'holds {len(built) - 1} records where the dataset '
                      f'metadata says {num_records}')
  for cache in candidates:
    if save(cache, built, stat):
      break
  else:
    logging.warning('TFRecord offsets of %s could not be cached (tried %s)',
                    path, ', '.join(candidates))
  return built


def load(cache: str, stat, num_records: int):
  """The offsets in `cache` if it is valid for a file of `stat` holding
  `num_records` records, else None."""
  try:
    with tf.io.gfile.GFile(cache, 'rb') as f:
      data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as entry:
      header = entry['header']
      found = entry['offsets'].astype(np.uint64)
  except Exception:  # pylint: disable=broad-except
    # Missing, unreadable or not ours: any of these means "build it".
    return None
  size, mtime_ns = stat
  if (header.tolist() != [_CACHE_FORMAT, size, mtime_ns] or
      len(found) != num_records + 1 or found[0] != 0 or found[-1] != size or
      np.any(np.diff(found) < OVERHEAD_BYTES)):
    return None
  return found


def spot_check(path: str, found: np.ndarray) -> bool:
  """Whether the middle and last records' length fields agree with
  `found`: two reads that catch an entry whose offsets are wrong although
  its size, time and count match."""
  n = len(found) - 1
  if n == 0:
    return True
  try:
    with _open(path) as f:
      for i in sorted({n // 2, n - 1}):
        f.seek(int(found[i]))
        header = f.read(_LENGTH.size)
        if (len(header) != _LENGTH.size or _LENGTH.unpack(header)[0] !=
            found[i + 1] - found[i] - OVERHEAD_BYTES):
          return False
  except (OSError, tf.errors.OpError):
    return False
  return True


def _open(path):
  return open(path, 'rb') if is_local(path) else tf.io.gfile.GFile(path, 'rb')


def save(cache: str, found: np.ndarray, stat) -> bool:
  """Writes the entry atomically; False where `cache` cannot be written."""
  buffer = io.BytesIO()
  np.savez(buffer, offsets=found,
           header=np.array([_CACHE_FORMAT, *stat], np.int64))
  tmp = f'{cache}.tmp-{uuid.uuid4().hex}'
  try:
    tf.io.gfile.makedirs(os.path.dirname(cache))
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      f.write(buffer.getvalue())
    tf.io.gfile.rename(tmp, cache, overwrite=True)
    return True
  except (OSError, tf.errors.OpError):
    # A read-only dataset directory (or bucket): the next candidate.
    try:
      tf.io.gfile.remove(tmp)
    except (OSError, tf.errors.OpError):
      pass
    return False
