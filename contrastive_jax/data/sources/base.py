"""The one data seam: a dataset split resolved once into a `Source`.

Everything downstream (the pretraining stream, evaluation, the kNN monitor,
the augmentation preview, embedding) reads examples through this interface
and never asks which kind of dataset it has. Each kind (TFDS ArrayRecord,
TFDS TFRecord, image folders, digits) is one module implementing it; the
registry in `sources/__init__.py` picks the module from the dataset string.

A source reads examples by index, in two steps so that the pretraining
stream can read a group of records per Python call and decode each example
in tf.data's parallel map:
  * `read(indices)`: int64 [G] -> a dict of [G] tensors (raw records),
    always with 'label' (int64, -1: none), so labels need no decoding;
  * `decode(record)`: one record (a dict of its slices) ->
    {'image': uint8 [H, W, 3], 'label': int64 scalar} (-1: no label).
Both must be usable inside `tf.data` maps (graph mode).
"""

import abc
import sys
import threading
from typing import Callable, Sequence

from absl import logging
import tensorflow as tf

from contrastive_jax.config import defaults as config_defaults
from contrastive_jax.data.sources import image_bytes
from contrastive_jax.errors import ConfigError, DataError

# Records per Python call of a source's reader.
READ_GROUP = 64
DEFAULT_MAX_BAD_FRACTION = config_defaults.field_default(
    'data.max_bad_fraction')
# Bad images named in the DataError.
_NAMED = 3
# What a split whose every image is bad reads: one black pixel (unless
# max_bad_fraction is 1, the run stops at the next log step).
BLACK = image_bytes.png_via_pil(b'P6 1 1 255\n\0\0\0')  # A 1x1 PPM.


def read_group(read_many, indices: tf.Tensor) -> dict:
  """{'encoded': string [G], 'label': int64 [G]} from `read_many`, a Python
  function of int64 [G] NumPy indices returning (encoded bytes, labels):
  one Python call per group of records (one per example costs more than
  the read)."""
  encoded, labels = tf.numpy_function(
      read_many, [indices], (tf.string, tf.int64), stateful=False)
  encoded.set_shape(indices.shape)
  labels.set_shape(indices.shape)
  return {'encoded': encoded, 'label': labels}


# A DataError raised in a reader (inside `tf.numpy_function`) reaches the
# code iterating the dataset as a TensorFlow error whose text is the whole
# Python traceback. Readers record it here before raising;
# `pipeline.as_numpy_iterator` raises the recorded error instead.
_pending_lock = threading.Lock()
_pending: list[DataError] = []


def fail_in_pipeline(error: DataError) -> DataError:
  """Records `error` for `pending_error`; returns it, to be raised."""
  with _pending_lock:
    _pending.append(error)
  return error


def pending_error() -> DataError | None:
  """The first DataError a reader raised since the last call (None if
  none), forgetting the others."""
  with _pending_lock:
    first = _pending[0] if _pending else None
    _pending.clear()
  return first


def max_bad_fraction(options) -> float:
  """config.data.max_bad_fraction, checked (a number in [0, 1])."""
  value = dict(options or {}).get('max_bad_fraction',
                                  DEFAULT_MAX_BAD_FRACTION)
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or
      not 0 <= value <= 1):
    raise ConfigError(f'config.data.max_bad_fraction={value!r} is invalid: '
                      'must be a number in [0, 1]')
  return float(value)


def process() -> tuple[int, int]:
  """(process index, process count). A multi-process run has started JAX
  before it opens its data; a tool that never imported JAX is one process."""
  jax = sys.modules.get('jax')
  return (jax.process_index(), jax.process_count()) if jax else (0, 1)


class BadImages:
  """What every source of encoded images does with an image that cannot be
  decoded (image folders, TFDS datasets).

  A decode that fails inside tf.data kills the run, and tf.data cannot skip
  the example without shifting every later position of the stream (the
  order and resume rest on positions). So each image's bytes are checked in
  the Python read step (`check`: image_bytes.py), and example i of a bad
  image reads the next good one after it instead (`stand_in`, wrapping
  around), with its label: every batch keeps its shape and the stream stays
  a pure function of the data, the same on a resume or another process.
  Each bad image is logged once; `metrics()` counts the distinct bad images
  this process met so far and raises a DataError once they exceed
  `max_fraction` of the examples it reads (its 1/P of the split in a run of
  P processes; the loop calls it at every log step).
  """

  def __init__(self, *, dataset: str, split: str, num_examples: int,
               name: Callable[[int], str], unit: str, remedy: str,
               max_fraction: float = DEFAULT_MAX_BAD_FRACTION,
               process_count: int = 1):
    """`name(i)` names example i in messages (a path, a shard and record);
    `unit` is what one example is ('file', 'record'); `remedy` says what to
    do when there are too many."""
    self.dataset, self.split = dataset, split
    self.num_examples = num_examples
    self.max_fraction = max_fraction
    self._name, self._unit, self._remedy = name, unit, remedy
    self._process_count = process_count
    # Index -> why it is bad. tf.data reads groups in parallel threads.
    self._bad = {}
    self._lock = threading.Lock()

  def is_bad(self, i: int) -> bool:
    return i in self._bad

  def mark(self, i: int, why: str):
    with self._lock:
      if i in self._bad:
        return
      self._bad[i] = why
      count = len(self._bad)
    logging.warning('%s: %s; example %d of split %r reads the next good %s '
                    'instead (%d bad so far)', self._name(i), why, i,
                    self.split, self._unit, count)

  def check(self, i: int, data: bytes) -> bytes | None:
    """Example i's bytes ready for `tf.io.decode_image`, or None (and i
    marked bad) when no decoder reads them."""
    if self.is_bad(i):
      return None
    data, why = image_bytes.for_tensorflow(data)
    if data is None:
      self.mark(i, why)
    return data

  def stand_in(self, i: int, label: int,
               read: Callable[[int], tuple]) -> tuple:
    """(bytes, label) of the first good example after example i (whose
    label is `label`), wrapping around; `read(j)` gives (checked bytes, or
    None when j is bad, label) of example j. A split with no good example
    reads a black pixel, with i's label."""
    for step in range(1, self.num_examples):
      data, found = read((i + step) % self.num_examples)
      if data is not None:
        return data, found
    return BLACK, label

  def reasons(self) -> dict:
    """{example index: why} of the bad images met so far."""
    with self._lock:
      return dict(sorted(self._bad.items()))

  def metrics(self) -> dict:
    """{'bad_images': count}, or a DataError above `max_fraction`."""
    bad = self.reasons()
    # Each process meets the bad images of the examples it reads: 1/P.
    share = self.num_examples / self._process_count
    if len(bad) > self.max_fraction * share:
      named = ', '.join(self._name(i) for i in list(bad)[:_NAMED])
      of = (f'the {self.num_examples} images' if self._process_count == 1
            else f'the ~{share:.0f} images this process reads')
      raise DataError(
          f'{len(bad)} of {of} of split {self.split!r} of {self.dataset} are '
          'unreadable or damaged, more than '
          f'config.data.max_bad_fraction={self.max_fraction} (e.g. '
          f'{named}{", ..." if len(bad) > _NAMED else ""}); {self._remedy}, '
          'or raise max_bad_fraction')
    return {'bad_images': len(bad)}


class Source(abc.ABC):
  """One split of one dataset, random access by example index."""

  #: The dataset string and split as the user gave them (for messages).
  dataset: str
  split: str
  #: Examples in the split (all processes together).
  num_examples: int
  #: Class names, index = label; None when the dataset has no labels.
  class_names: tuple[str, ...] | None
  #: (H, W, 3), None where images differ in size.
  image_shape: tuple[int | None, int | None, int]

  @property
  def labelled(self) -> bool:
    """Whether examples carry labels (a labelled dataset may still hold an
    unlabelled split, e.g. stl10 'unlabelled', whose labels are -1)."""
    return self.class_names is not None

  @property
  def num_classes(self) -> int | None:
    return None if self.class_names is None else len(self.class_names)

  @abc.abstractmethod
  def read(self, indices: tf.Tensor) -> dict:
    """int64 [G] example indices -> a dict of [G] raw-record tensors."""

  @abc.abstractmethod
  def decode(self, record: dict) -> dict:
    """One raw record -> {'image': uint8 [H, W, 3], 'label': int64}."""

  def example_ids(self) -> Sequence[str]:
    """A stable name per example, in index order (file paths for folders)."""
    return [f'{self.split}[{i}]' for i in range(self.num_examples)]

  def commit(self):
    """Keeps in the workdir what must stay fixed for the run (an image
    folder's file index and class names). The loop calls it once the
    workdir exists; opening a source only reads."""

  def input_metrics(self) -> dict:
    """Scalars about the reading so far (e.g. bad_images); may raise a
    DataError when the data is too damaged to go on."""
    return {}

  def shard_range(self, process_index: int, process_count: int):
    """[start, stop) of this process's contiguous share of the split:
    sizes differ by at most one and together cover it."""
    if not (isinstance(process_count, int) and process_count >= 1 and
            isinstance(process_index, int) and
            0 <= process_index < process_count):
      raise ValueError(f'need 0 <= process_index < process_count, got '
                       f'process_index={process_index!r}, '
                       f'process_count={process_count!r}')
    n = self.num_examples
    return (process_index * n // process_count,
            (process_index + 1) * n // process_count)

  def sequential(self, *, process_index: int = 0, process_count: int = 1,
                 limit: int | None = None,
                 num_parallel=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """This process's share of the split in index order, as a tf.data
    stream of {'image', 'label'}: the eval and preview read. `limit` keeps
    only the first `limit` examples of the share."""
    start, stop = self.shard_range(process_index, process_count)
    if limit is not None:
      stop = min(stop, start + limit)
    return self.examples(tf.data.Dataset.range(start, stop),
                         num_parallel=num_parallel)

  def examples(self, indices: tf.data.Dataset,
               num_parallel=tf.data.AUTOTUNE) -> tf.data.Dataset:
    """The examples {'image', 'label'} at a stream of int64 indices, in
    order: read READ_GROUP at a time, decoded one by one."""
    ds = indices.batch(READ_GROUP).map(
        self.read, num_parallel_calls=num_parallel, deterministic=True)
    return ds.unbatch().map(self.decode, num_parallel_calls=num_parallel,
                            deterministic=True)

  def __repr__(self):
    return (f'{type(self).__name__}({self.dataset!r}, {self.split!r}, '
            f'{self.num_examples} examples)')
