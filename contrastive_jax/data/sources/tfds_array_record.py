"""TFDS datasets prepared as ArrayRecord: random access by index.

Records are read through `builder.as_data_source` a group per Python call
(one `tf.numpy_function` per example costs more than the read), with the
image left encoded; images are decoded per example in tf.data's parallel
map, not in Python.
"""

import numpy as np
import tensorflow_datasets as tfds

from contrastive_jax.data.sources import tfds_common
from contrastive_jax.data.sources.base import read_group


class ArrayRecordSource(tfds_common.TFDSSource):

  def __init__(self, builder, dataset: str, split: str):
    super().__init__(builder, dataset, split)
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
    return read_group(self._read_many, indices)
