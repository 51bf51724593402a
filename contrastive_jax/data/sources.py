"""Random access to a split by example index, for the pretraining stream.

`digits` lives in memory and is gathered in the graph. TFDS datasets are read
through `builder.as_data_source` (ArrayRecord files): each process reads only
the examples its slice of the permutation names, a group of records per
Python call (one `tf.numpy_function` per example costs more than the read),
and images are decoded per example in tf.data's parallel map, not in Python.
Datasets prepared as TFRecord (no random access) are rejected with the command
that re-prepares them: an order that depends on a shuffle buffer cannot be
resumed at step k without replaying it.
"""

import typing

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data import datasets, digits
from contrastive_jax.errors import DataError


class Source(typing.NamedTuple):
  """A split read by index: `read(indices)` maps int64 [G] indices to a
  group of raw records (a dict of [G] tensors), `decode(record)` one record
  (a dict of its slices) to {'image': uint8 [H, W, 3], 'label': int64}."""
  num_examples: int
  read: typing.Callable
  decode: typing.Callable


def open_split(name, split, *, data_dir=None):
  """The split as a `Source`."""
  if name == 'digits':
    arrays = digits.load_digits_split(split)
    images = tf.constant(arrays['image'])
    labels = tf.constant(arrays['label'])
    return Source(len(arrays['label']),
                  lambda i: {'image': tf.gather(images, i),
                             'label': tf.gather(labels, i)},
                  lambda record: record)
  builder = datasets.get_builder(name, data_dir)
  features = builder.info.features
  datasets.check_image_feature(name, features)
  source = _data_source(builder, name, split)
  channels = features['image'].shape[-1]
  labelled = 'label' in features

  def read_many(indices):
    keys = indices.tolist()
    try:
      examples = source.__getitems__(keys)
    except TypeError:
      # tfds.testing.mock_data's source breaks __getitems__ (tfds 4.9.10).
      examples = [source[key] for key in keys]
    encoded = np.array([e['image'] for e in examples], dtype=object)
    labels = np.array([e['label'] if labelled else -1 for e in examples],
                      dtype=np.int64)
    return encoded, labels

  def read(indices):
    encoded, labels = tf.numpy_function(
        read_many, [indices], (tf.string, tf.int64), stateful=False)
    encoded.set_shape(indices.shape)
    labels.set_shape(indices.shape)
    return {'encoded': encoded, 'label': labels}

  def decode(record):
    image = tf.io.decode_image(record['encoded'], channels=channels,
                               expand_animations=False)
    if channels == 1:
      image = tf.image.grayscale_to_rgb(image)
    return {'image': tf.ensure_shape(image, [None, None, 3]),
            'label': record['label']}

  return Source(len(source), read, decode)


def _data_source(builder, name, split):
  try:
    return builder.as_data_source(
        split=split, decoders={'image': tfds.decode.SkipDecoding()})
  except NotImplementedError:
    root = str(builder.data_dir_root)
    raise DataError(
        f'dataset {name!r} in {root} is stored without random access '
        '(TFRecord); the resumable pretraining stream needs ArrayRecord: '
        f'`tfds build {name} --data_dir={root} --file_format=array_record`'
    ) from None
  except AssertionError as e:
    if 'could not find data' not in str(e):
      raise
    raise DataError(datasets.missing_message(builder, name)) from None
