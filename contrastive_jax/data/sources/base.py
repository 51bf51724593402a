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
from typing import Sequence

import tensorflow as tf

# Records per Python call of a source's reader.
READ_GROUP = 64


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
