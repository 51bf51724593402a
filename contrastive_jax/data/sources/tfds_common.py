"""Prepared TFDS datasets: finding the builder, checking its features, and
choosing the reader for the format it was prepared in.

Nothing here downloads: a training job that silently starts a multi-hour
download, or retries for minutes without network, is worse than one clear
error naming the command that prepares the data
(`python -m contrastive_jax.prepare`).
"""

import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data.sources.base import Source
from contrastive_jax.errors import ConfigError, DataError

OFFLINE_HINT = '--config=configs/simclr.py:digits works offline'


def get_builder(name, data_dir):
  """The TFDS builder of `name` (local metadata only: no network)."""
  if not isinstance(name, str) or not name:
    raise ConfigError(f'dataset: expected a dataset name, got {name!r}')
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    raise ConfigError(
        f"dataset: {name!r} is neither 'digits', 'folder:PATH' nor a TFDS "
        'dataset (see tfds.list_builders())') from None


def prepare_command(name, root) -> str:
  return f'python -m contrastive_jax.prepare {name} --data_dir={root}'


def missing_message(builder, name):
  root = str(builder.data_dir_root)
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    how = (f'it needs a manual download into {root}/downloads/manual, then '
           f'`{prepare_command(name, root)}`')
  else:
    how = (f'prepare it with `{prepare_command(name, root)}` on a machine '
           'with internet')
  return (f'dataset {name!r} is not prepared in data_dir {root} (set '
          f'config.data_dir or TFDS_DATA_DIR); {how}, or run once with '
          f'--config.download=True; {OFFLINE_HINT}')


def prepared_builder(name, data_dir):
  """The builder of a prepared dataset with an image feature."""
  builder = get_builder(name, data_dir)
  if not builder.is_prepared():
    raise DataError(missing_message(builder, name))
  check_image_feature(name, builder.info.features)
  return builder


def check_image_feature(name, features):
  image = features['image'] if 'image' in features else None
  shape = getattr(image, 'shape', None)
  if not shape or shape[-1] not in (1, 3):
    raise DataError(f"dataset {name!r} has no 'image' feature with 1 or 3 "
                    'channels; only image classification datasets are '
                    'supported')


def class_names(features):
  """The label feature's class names, or None without a label feature."""
  if 'label' not in features:
    return None
  label = features['label']
  names = getattr(label, 'names', None)
  if names:
    return tuple(names)
  return tuple(str(i) for i in range(label.num_classes))


def image_shape(features):
  height, width, _ = features['image'].shape
  return (height, width, 3)


def check_split(builder, name, split):
  """The split's file instructions; a ConfigError for an unknown split."""
  try:
    return builder.info.splits[split].file_instructions
  except (KeyError, ValueError) as e:
    splits = ', '.join(sorted(builder.info.splits.keys()))
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    if 'Unknown split' in detail:
      detail = 'no such split'
    raise ConfigError(f'split {split!r} of dataset {name!r}: {detail} (it '
                      f'has {splits})') from None


class TFDSSource(Source):
  """What both TFDS formats share: the features' class names, image shape
  and channels, and decoding an encoded image record."""

  def __init__(self, builder, dataset: str, split: str):
    features = builder.info.features
    self.dataset, self.split = dataset, split
    self.class_names = class_names(features)
    self.image_shape = image_shape(features)
    self._channels = features['image'].shape[-1]

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


def open(dataset, split, *, data_dir=None, workdir=None, options=None):  # pylint: disable=redefined-builtin
  """The reader for the format the dataset was prepared in."""
  del workdir, options
  builder = prepared_builder(dataset, data_dir)
  check_split(builder, dataset, split)
  file_format = builder.info.file_format
  # A dataset may hold its records in both formats (`prepare --convert
  # --keep_tfrecord`, or TFDS's own converter, which adds ArrayRecord next
  # to TFRecord): ArrayRecord needs no offset index.
  formats = builder.info.available_file_formats()
  if tfds.core.FileFormat.ARRAY_RECORD in formats:
    from contrastive_jax.data.sources import tfds_array_record  # pylint: disable=g-import-not-at-top
    return tfds_array_record.ArrayRecordSource(builder, dataset, split)
  if file_format == tfds.core.FileFormat.TFRECORD:
    from contrastive_jax.data.sources import tfds_tfrecord  # pylint: disable=g-import-not-at-top
    return tfds_tfrecord.TFRecordSource(builder, dataset, split)
  raise DataError(
      f'dataset {dataset!r} is stored as {file_format}; training reads '
      f'ArrayRecord or TFRecord: `{prepare_command(dataset, builder.data_dir_root)} '
      '--convert` rewrites it as ArrayRecord')
