"""TFDS datasets prepared as ArrayRecord: random access by index.

Records are read through `builder.as_data_source` a group per Python call
(one `tf.numpy_function` per example costs more than the read), with the
image left encoded; images are decoded per example in tf.data's parallel
map, not in Python.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data.sources import tfds_common
from contrastive_jax.data.sources.base import Source


class ArrayRecordSource(Source):

  def __init__(self, builder, dataset: str, split: str):
    features = builder.info.features
    self.dataset, self.split = dataset, split
    self.class_names = tfds_common.class_names(features)
    self.image_shape = tfds_common.image_shape(features)
    self._channels = features['image'].shape[-1]
    self._records = builder.as_data_source(
        split=split, decoders={'image': tfds.decode.SkipDecoding()})
    self.num_examples = len(self._records)

  def _read_many(self, indices):
    keys = indices.tolist()
    examples = self._records.__getitems__(keys)
    encoded = np.array([e['image'] for e in examples], dtype=object)
    if self.labelled:
      labels = np.array([e['label'] for e in examples], dtype=np.int64)
    else:
      labels = np.full(len(keys), -1, np.int64)
    return encoded, labels

  def read(self, indices):
    encoded, labels = tf.numpy_function(
        self._read_many, [indices], (tf.string, tf.int64), stateful=False)
    encoded.set_shape(indices.shape)
    labels.set_shape(indices.shape)
    return {'encoded': encoded, 'label': labels}

  def decode(self, record):
    return {'image': decode_image(record['encoded'], self._channels),
            'label': record['label']}


def decode_image(encoded, channels):
  """uint8 [H, W, 3] from JPEG/PNG bytes of a 1- or 3-channel feature."""
  image = tf.io.decode_image(encoded, channels=channels,
                             expand_animations=False)
  if channels == 1:
    image = tf.image.grayscale_to_rgb(image)
  return tf.ensure_shape(image, [None, None, 3])
