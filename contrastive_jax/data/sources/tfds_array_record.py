"""TFDS datasets prepared as ArrayRecord: random access by index.

Records are read through `builder.as_data_source` a group per Python call
(one `tf.numpy_function` per example costs more than the read), with the
image left encoded and its bytes checked (tfds_common.TFDSSource); images
are decoded per example in tf.data's parallel map, not in Python.
"""

import tensorflow_datasets as tfds

from contrastive_jax.data.sources import tfds_common


class ArrayRecordSource(tfds_common.TFDSSource):

  def __init__(self, builder, dataset: str, split: str, options=None):
    super().__init__(builder, dataset, split, options)
    self._records = builder.as_data_source(
        split=split, decoders={'image': tfds.decode.SkipDecoding()})

  def _fetch(self, indices):
    try:
      examples = self._records.__getitems__(indices)
    except Exception as e:  # pylint: disable=broad-except
      # The reader's complaint about its file (Riegeli's RuntimeError for
      # a damaged or truncated shard, ...): name the record.
      raise self._unreadable_one(indices, e) from None
    for index, e in zip(indices, examples):
      # A shard cut at a block boundary reads back empty records.
      if e['image'] is None or (self.labelled and e['label'] is None):
        raise self.unreadable(index, 'the record is empty')
    encoded = [e['image'] for e in examples]
    if self.labelled:
      labels = [int(e['label']) for e in examples]
    else:
      labels = [-1] * len(indices)
    return encoded, labels

  def _unreadable_one(self, indices, group_error):
    """The DataError for the first record of the group that cannot be read
    alone (the group's first when each can)."""
    for index in indices:
      try:
        self._records[index]
      except Exception as e:  # pylint: disable=broad-except
        return self.unreadable(index, tfds_common.first_line(e))
    return self.unreadable(indices[0], tfds_common.first_line(group_error))
