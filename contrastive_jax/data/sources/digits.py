"""scikit-learn's digits as a `Source`: in memory, gathered in the graph."""

import numpy as np
import tensorflow as tf

from contrastive_jax.data import digits as digits_data
from contrastive_jax.data.sources.base import Source


class DigitsSource(Source):

  def __init__(self, split: str):
    arrays = digits_data.load_digits_split(split)
    self.dataset, self.split = 'digits', split
    self.num_examples = len(arrays['label'])
    self.class_names = tuple(str(d) for d in range(10))
    self.image_shape = tuple(arrays['image'].shape[1:])
    self._images = tf.constant(arrays['image'])
    self._labels = tf.constant(arrays['label'], tf.int64)

  def read(self, indices):
    return {'image': tf.gather(self._images, indices),
            'label': tf.gather(self._labels, indices)}

  def decode(self, record):
    return {'image': record['image'], 'label': record['label']}

  def numpy(self):
    """(images uint8 [N, 8, 8, 3], labels int64 [N]) of the split."""
    return np.asarray(self._images), np.asarray(self._labels)


def open(dataset, split, *, data_dir=None, workdir=None, options=None):  # pylint: disable=redefined-builtin
  del dataset, data_dir, workdir, options  # Digits ship with scikit-learn.
  return DigitsSource(split)
