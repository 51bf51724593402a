"""Prepared TFDS datasets: finding the builder, checking its features,
choosing the reader for the format it was prepared in, and what both
readers share: the example -> (shard, record) map, checking each image's
bytes (a bad image reads the next good one: `base.BadImages`, as in image
folders) and naming the shard and example of a record that cannot be read.

Nothing here downloads: a training job that silently starts a multi-hour
download, or retries for minutes without network, is worse than one clear
error naming the command that prepares the data
(`python -m contrastive_jax.prepare`).
"""

import bisect
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data.sources import base
from contrastive_jax.data.sources.base import Source, read_group
from contrastive_jax.errors import ConfigError, DataError

OFFLINE_HINT = '--config=configs/simclr.py:digits works offline'


# What a dataset value may be, in every message about one.
DATASET_VALUES = ("a dataset is 'digits', 'folder:PATH' (a directory or "
                  'gs:// path of images) or a prepared TFDS dataset '
                  'NAME[/CONFIG][:VERSION], e.g. cifar10, cifar10:3.0.2, '
                  'imagenet2012_subset/1pct')


def _is_path(name: str) -> bool:
  return name.startswith(('/', '.', '~')) or '://' in name or '\\' in name


def _builder_complaint(error: Exception) -> str:
  """TFDS's reason for rejecting a name, in one line: the text after its
  'Failed to construct dataset ..., builder_kwargs {...}: ' prefix."""
  text = ' '.join(line.strip() for line in str(error).splitlines()
                  if line.strip())
  reason = re.sub(r'^Failed to construct dataset .*? builder_kwargs ".*?": ',
                  '', text)
  reason = re.sub(r'\s*Here are \d+ BuilderConfigs whose name closely '
                  r'match:\s*$', '', reason).rstrip('.')
  return reason if len(reason) <= 300 else reason[:297] + '...'


def get_builder(name, data_dir):
  """The TFDS builder of `name` (local metadata only: no network)."""
  if not isinstance(name, str) or not name:
    raise ConfigError(f'dataset: expected a dataset name, got {name!r}')
  path_error = ConfigError(f'dataset: {name!r} is a path, not a dataset '
                           f'name: for a directory of images use '
                           f'folder:{name}; {DATASET_VALUES}')
  if _is_path(name):
    raise path_error
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    if os.path.isdir(name):
      raise path_error from None
    raise ConfigError(
        f"dataset: {name!r} is neither 'digits', 'folder:PATH' nor a TFDS "
        f'dataset (see tfds.list_builders()); {DATASET_VALUES}') from None
  except ValueError as e:
    if str(e).startswith('Parsing builder name string'):
      raise ConfigError(f'dataset: {name!r} is not a dataset name '
                        '(VERSION is x.y.z); '
                        f'{DATASET_VALUES}') from None
    raise ConfigError(f'dataset: {name!r}: {_builder_complaint(e)}; '
                      f'{DATASET_VALUES}') from None
  except AssertionError as e:  # TFDS's answer to a version it lacks.
    raise ConfigError(f'dataset: {name!r}: {_builder_complaint(e)}; '
                      f'{DATASET_VALUES}') from None


def prepare_command(name, root) -> str:
  return f'python -m contrastive_jax.prepare {name} --data_dir={root}'


def prepare_again(builder, name) -> str:
  """What to do about a prepared dataset whose files are damaged."""
  text = f'delete {builder.data_dir} and prepare it again'
  if isinstance(builder, tfds.core.read_only_builder.ReadOnlyBuilder):
    return text  # No builder code here: only how it was first prepared.
  return f'{text} (`{prepare_command(name, builder.data_dir_root)}`)'


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


class Shards:
  """Example i of a split -> (shard path, record index in the shard), from
  the split's file instructions (which also resolve slices)."""

  def __init__(self, instructions):
    self._paths = [i.filename for i in instructions]
    self._skips = [i.skip for i in instructions]
    self._starts = np.cumsum([0] + [i.take for i in instructions]).tolist()

  def __call__(self, index: int) -> tuple[str, int]:
    k = bisect.bisect_right(self._starts, index) - 1
    return self._paths[k], self._skips[k] + index - self._starts[k]


class TFDSSource(Source):
  """What both TFDS formats share: the features' class names, image shape
  and channels, reading a group of (image bytes, label) per Python call
  with each image checked, and decoding an encoded image record.

  A subclass implements `_fetch(indices) -> (image bytes, labels)`, raising
  `unreadable(...)` for a record its file cannot give.
  """

  def __init__(self, builder, dataset: str, split: str, options=None):
    features = builder.info.features
    self.dataset, self.split = dataset, split
    self.class_names = class_names(features)
    self.image_shape = image_shape(features)
    self._channels = features['image'].shape[-1]
    self._builder = builder
    instructions = builder.info.splits[split].file_instructions
    self._shards = Shards(instructions)
    self.num_examples = sum(i.take for i in instructions)
    _, process_count = base.process()
    self._bad = base.BadImages(
        dataset=dataset, split=split, num_examples=self.num_examples,
        name=self.example_name, unit='record',
        remedy='replace them in the data it was prepared from and prepare it '
        'again',
        max_fraction=base.max_bad_fraction(options),
        process_count=process_count)

  def example_name(self, index: int) -> str:
    path, record = self._shards(index)
    return f'example {index} (record {record} of {path})'

  def unreadable(self, index: int, detail: str) -> DataError:
    """The DataError for example `index`, whose record cannot be read
    (recorded for `pipeline.as_numpy_iterator`: raise it)."""
    return base.fail_in_pipeline(DataError(
        f'dataset {self.dataset!r}, split {self.split!r}: '
        f'{self.example_name(index)} cannot be read: {detail}; the file is '
        f'damaged or truncated: '
        f'{prepare_again(self._builder, self.dataset)}'))

  def _fetch(self, indices: list[int]) -> tuple[list, list]:
    raise NotImplementedError

  def read(self, indices):
    return read_group(self._read_many, indices)

  def _read_many(self, indices):
    indices = indices.tolist()
    encoded, labels = self._fetch(indices)
    for k, i in enumerate(indices):
      data = self._bad.check(i, encoded[k])
      if data is None:
        data, labels[k] = self._bad.stand_in(i, labels[k], self._read_one)
      encoded[k] = data
    return np.array(encoded, dtype=object), np.array(labels, np.int64)

  def _read_one(self, i):
    if self._bad.is_bad(i):  # Known bad: do not read it again.
      return None, -1
    encoded, labels = self._fetch([i])
    return self._bad.check(i, encoded[0]), labels[0]

  def input_metrics(self):
    return self._bad.metrics()

  def bad_images(self) -> dict:
    """{example name: why} of the bad images met so far."""
    return {self.example_name(i): why
            for i, why in self._bad.reasons().items()}

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


def first_line(error: BaseException) -> str:
  text = str(error).strip()
  return (f'{type(error).__name__}: {text.splitlines()[0]}' if text
          else type(error).__name__)
