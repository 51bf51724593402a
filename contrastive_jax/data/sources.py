"""Random access to a split by example index, for the pretraining stream.

`digits` lives in memory and is gathered in the graph. TFDS datasets are read
through `builder.as_data_source` (ArrayRecord files): each process reads only
the examples its slice of the permutation names, and images are decoded in
tf.data's parallel map, not in Python. Datasets prepared as TFRecord (no random
access) are rejected with the command that re-prepares them: an order that
depends on a shuffle buffer cannot be resumed at step k without replaying it.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data import datasets, digits
from contrastive_jax.errors import DataError


def open_split(name, split, *, data_dir=None):
  """(number of examples, fetch) where `fetch(index)` maps an int64 scalar
  tensor to {'image': uint8 [H, W, 3], 'label': int64}."""
  if name == 'digits':
    arrays = digits.load_digits_split(split)
    images = tf.constant(arrays['image'])
    labels = tf.constant(arrays['label'])
    return len(arrays['label']), lambda i: {'image': tf.gather(images, i),
                                            'label': tf.gather(labels, i)}
  builder = datasets.get_builder(name, data_dir)
  features = builder.info.features
  datasets.check_image_feature(name, features)
  source = _data_source(builder, name, split)
  channels = features['image'].shape[-1]
  labelled = 'label' in features

  def read(index):
    example = source[int(index)]
    return example['image'], np.int64(example['label'] if labelled else -1)

  def fetch(index):
    encoded, label = tf.numpy_function(read, [index], (tf.string, tf.int64),
                                       stateful=False)
    image = tf.io.decode_image(encoded, channels=channels,
                               expand_animations=False)
    if channels == 1:
      image = tf.image.grayscale_to_rgb(image)
    label.set_shape([])
    return {'image': tf.ensure_shape(image, [None, None, 3]), 'label': label}

  return len(source), fetch


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
