"""A prepared TFDS dataset as a `Source`: the reader for the file format it
was prepared in (ArrayRecord, read by index; or TFRecord, through an offset
index). The registry's 'tfds' kind. Both readers build on tfds_common,
which imports neither.
"""

import tensorflow_datasets as tfds

from contrastive_jax.data.sources import tfds_array_record, tfds_tfrecord
from contrastive_jax.data.sources.tfds_common import (check_split,
                                                      prepare_command,
                                                      prepared_builder)
from contrastive_jax.errors import DataError


def open(dataset, split, *, data_dir=None, workdir=None, options=None):  # pylint: disable=redefined-builtin
  """The reader for the format the dataset was prepared in."""
  del workdir
  builder = prepared_builder(dataset, data_dir)
  check_split(builder, dataset, split)
  file_format = builder.info.file_format
  # A dataset may hold its records in both formats (`prepare --convert
  # --keep_tfrecord`, or TFDS's own converter, which adds ArrayRecord next
  # to TFRecord): ArrayRecord needs no offset index.
  formats = builder.info.available_file_formats()
  if tfds.core.FileFormat.ARRAY_RECORD in formats:
    return tfds_array_record.ArrayRecordSource(builder, dataset, split,
                                               options)
  if file_format == tfds.core.FileFormat.TFRECORD:
    return tfds_tfrecord.TFRecordSource(builder, dataset, split, options)
  raise DataError(
      f'dataset {dataset!r} is stored as {file_format}; training reads '
      f'ArrayRecord or TFRecord: `{prepare_command(dataset, builder.data_dir_root)} '
      '--convert` rewrites it as ArrayRecord')
