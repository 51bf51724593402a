"""Loading a dataset split by name, as `{'image': uint8 HxWx3, 'label': int64}`.

`digits` is scikit-learn's offline dataset (digits.py); every other name is a
TFDS image dataset (cifar10, cifar100, stl10, imagenet2012, mnist, ...) that
must already be prepared in the data dir, or be downloaded on request with
`download_and_prepare` (config.download=True): a training job that silently
starts a multi-hour download, or retries for minutes without network, is
worse than one clear error.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data import digits
from contrastive_jax.errors import ConfigError, DataError

_OFFLINE_HINT = '--config=configs/simclr.py:digits works offline'


def load_split(name, split, *, data_dir=None, process_index=0,
               process_count=1, shuffle_files=False, file_seed=0):
  """Returns this process's share of `split` as a tf.data.Dataset.

  Elements are {'image': uint8 [H, W, 3], 'label': int64 scalar}; greyscale
  datasets are tiled to 3 channels and examples without a label get -1 (stl10
  'unlabelled' already stores -1). Processes get disjoint shards that together
  cover the split, of sizes differing by at most one. `shuffle_files` and
  `file_seed` shuffle the order of TFDS files (digits has no files).
  """
  _check_process(process_index, process_count)
  if name == 'digits':
    arrays = digits.load_digits_split(split)
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    return ds.shard(process_count, process_index)
  builder = get_builder(name, data_dir)
  features = builder.info.features
  check_image_feature(name, features)
  shard = tfds.even_splits(split, process_count)[process_index]
  ds = _as_dataset(builder, name, shard, shuffle_files=shuffle_files,
                   read_config=tfds.ReadConfig(shuffle_seed=file_seed))
  return ds.map(_standardizer(features), num_parallel_calls=tf.data.AUTOTUNE)


def num_examples(name, split, data_dir=None) -> int:
  """Number of examples in the whole `split` (all processes together)."""
  if name == 'digits':
    return len(digits.load_digits_split(split)['label'])
  builder = get_builder(name, data_dir)
  if builder.info.splits:
    return builder.info.splits[split].num_examples
  # No recorded split sizes: either the data is missing (raises DataError) or
  # the builder is mocked (tfds.testing.mock_data), and counting is cheap.
  ds = _as_dataset(builder, name, split)
  return int(ds.reduce(0, lambda count, _: count + 1))


def download_and_prepare(name, data_dir=None):
  """Downloads and prepares a TFDS dataset unless it is already prepared.

  Any failure (no network, a manual-download dataset without its archives)
  becomes one DataError line.
  """
  if name == 'digits':
    return
  builder = get_builder(name, data_dir)
  if builder.is_prepared():
    return
  try:
    # ArrayRecord: the resumable pretraining stream reads by index.
    builder.download_and_prepare(file_format='array_record')
  except Exception as e:  # pylint: disable=broad-except
    # Network, manual-download and disk errors come from many libraries.
    detail = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise DataError(
        f'could not download and prepare dataset {name!r} into '
        f'{builder.data_dir_root}: {type(e).__name__}: {detail[:300]}; '
        f'{_OFFLINE_HINT}') from None


def has_labels(name, data_dir=None) -> bool:
  """Whether the dataset has a 'label' feature.

  A labelled dataset may still hold unlabelled splits (stl10 'unlabelled',
  label -1).
  """
  if name == 'digits':
    return True
  return 'label' in get_builder(name, data_dir).info.features


def _check_process(process_index, process_count):
  if not (isinstance(process_count, int) and process_count >= 1 and
          isinstance(process_index, int) and
          0 <= process_index < process_count):
    raise ValueError(f'need 0 <= process_index < process_count, got '
                     f'process_index={process_index!r}, '
                     f'process_count={process_count!r}')


def get_builder(name, data_dir):
  if not isinstance(name, str) or not name:
    raise ConfigError(f'dataset: expected a dataset name, got {name!r}')
  try:
    # Building reads only local metadata: no network, no download.
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    raise ConfigError(f"dataset: {name!r} is neither 'digits' nor a TFDS "
                      'dataset (see tfds.list_builders())') from None


def check_image_feature(name, features):
  image = features['image'] if 'image' in features else None
  shape = getattr(image, 'shape', None)
  if not shape or shape[-1] not in (1, 3):
    raise DataError(f"dataset {name!r} has no 'image' feature with 1 or 3 "
                    'channels; only image classification datasets are '
                    'supported')


def _as_dataset(builder, name, split, **kwargs):
  """`builder.as_dataset`, with missing data turned into a DataError.

  We try to read rather than test `builder.is_prepared()` first, because
  tfds.testing.mock_data serves data from builders that say they are not
  prepared.
  """
  try:
    return builder.as_dataset(split=split, **kwargs)
  except AssertionError as e:
    # TFDS signals "no prepared files here" with an AssertionError.
    if 'could not find data' not in str(e):
      raise
    raise DataError(missing_message(builder, name)) from None


def missing_message(builder, name):
  root = str(builder.data_dir_root)
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    how = (f'it needs a manual download into {root}/downloads/manual, then '
           f'`tfds build {name} --data_dir={root}`')
  else:
    how = (f'prepare it with `tfds build {name} --data_dir={root}` on a '
           'machine with internet')
  return (f'dataset {name!r} is not prepared in data_dir {root} (set '
          f'config.data_dir or TFDS_DATA_DIR); {how}, or run once with '
          f'--config.download=True; {_OFFLINE_HINT}')


def _standardizer(features):
  """Returns a map fn from TFDS features to {'image': HxWx3, 'label'}."""
  grayscale = features['image'].shape[-1] == 1
  labelled = 'label' in features

  def standardize(example):
    image = example['image']
    if grayscale:
      image = tf.image.grayscale_to_rgb(image)
    if labelled:
      label = tf.cast(example['label'], tf.int64)
    else:
      label = tf.constant(-1, tf.int64)
    return {'image': image, 'label': label}
  return standardize
