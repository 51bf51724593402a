"""Prepares datasets for training, without apache_beam (which `tfds build`
imports and this environment lacks).

  python -m contrastive_jax.prepare NAME [--data_dir=DIR]
      downloads and prepares TFDS dataset NAME as ArrayRecord (a
      manual-download dataset such as imagenet2012 first needs its archives
      in DIR/downloads/manual; the error says which);
  python -m contrastive_jax.prepare NAME --convert [--keep_tfrecord]
      rewrites a dataset prepared as TFRecord (by `tfds build` or an older
      TFDS) as ArrayRecord, in place (data/convert.py);
  python -m contrastive_jax.prepare --folder=PATH --name=NAME [--data_dir=DIR]
      packs an image folder into TFDS dataset NAME (data/pack_folder.py).

Training reads TFRecord too (sources/tfds_tfrecord.py, through a one-time
index of record offsets); ArrayRecord needs no index and is what TFDS's
random-access API (`as_data_source`) reads. Bad input or any failure: one
`error: ...` line, exit 2.
"""

import contextlib
import os
import re

# Before TensorFlow loads: keep its C++ start-up chatter out of the output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from contrastive_jax import cli  # noqa: E402
from contrastive_jax.data import sources  # noqa: E402
from contrastive_jax.data.sources import tfds_common  # noqa: E402
from contrastive_jax.errors import (  # noqa: E402
    ConfigError, DataError, UserError)

# Connection attempts per download. TFDS makes 10 with exponential backoff:
# without network it gives up after ~200 s; 5 take ~6 s and still ride out
# a brief outage.
_DOWNLOAD_ATTEMPTS = 5
# Characters of a manual-download dataset's instructions in its error line.
_MAX_INSTRUCTIONS = 600


def builder_of(name, data_dir):
  """`tfds_common.get_builder`, with TFDS's other complaints about a name
  (an unknown version or config) as a ConfigError."""
  try:
    return tfds_common.get_builder(name, data_dir)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'dataset {name!r}: {_first_line(e)}') from None


def manual_dir(builder) -> str:
  return os.path.join(str(builder.data_dir_root), 'downloads', 'manual')


def manual_message(builder, name) -> str:
  """Where to put which files, in one line."""
  text = ' '.join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
  if len(text) > _MAX_INSTRUCTIONS:
    text = text[:_MAX_INSTRUCTIONS - 3] + '...'
  return (f'dataset {name!r} needs a manual download into '
          f'{manual_dir(builder)}: {text} Then run '
          f'`{tfds_common.prepare_command(name, builder.data_dir_root)}` '
          'again.')


def download_and_prepare(name, data_dir=None) -> bool:
  """Downloads and prepares TFDS dataset `name` as ArrayRecord unless it is
  already prepared; True when it prepared it now. 'digits' and folders
  need nothing.

  Any failure (no network, a manual-download dataset without its archives,
  a full disk) is one DataError line; TFDS leaves no half-prepared dataset.
  """
  if sources.kind_of(name) != 'tfds':
    return False
  builder = builder_of(name, data_dir)
  if builder.is_prepared():
    return False
  manual = manual_dir(builder)
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
      tf.io.gfile.isdir(manual) and tf.io.gfile.listdir(manual)):
    # Checked here: TFDS would create directories first, then fail with the
    # instructions across several lines.
    raise DataError(manual_message(builder, name))
  config = tfds.download.DownloadConfig(
      # The GCS copies TFDS would fetch instead are TFRecord.
      try_download_gcs=False, manual_dir=manual)
  before = _entries_before(builder.data_dir_root)
  try:
    with _few_download_attempts():
      builder.download_and_prepare(file_format='array_record',
                                   download_config=config)
  except Exception as e:  # pylint: disable=broad-except
    _remove_new_entries(builder.data_dir_root, before)
    # Network, manual-download and disk errors come from many libraries.
    raise DataError(
        f'could not download and prepare dataset {name!r} into '
        f'{builder.data_dir_root}: {_why(e)}; {tfds_common.OFFLINE_HINT}'
    ) from None
  return True


def _entries_before(root: str) -> dict:
  """{'': names in `root`, 'downloads': names in root/downloads} before a
  download: what a failed one must leave (None: the folder was absent)."""
  def names(path):
    try:
      return set(tf.io.gfile.listdir(path)) if tf.io.gfile.isdir(
          path) else None
    except tf.errors.OpError:
      return None
  return {'': names(root), 'downloads': names(os.path.join(root,
                                                           'downloads'))}


def _remove_new_entries(root: str, before: dict):
  """Removes what a failed download created in `root` (the dataset's
  folder, `downloads/` or the partial files in it): nothing that was there
  before is touched."""
  for sub in ('downloads', ''):
    path = os.path.join(root, sub) if sub else root
    old = before[sub]
    try:
      if not tf.io.gfile.isdir(path):
        continue
      for name in tf.io.gfile.listdir(path):
        name = name.rstrip('/')
        if old is not None and name in old:
          continue
        if sub == '' and name == 'downloads' and before['downloads'] is not None:
          continue  # handled above: only its new entries went
        target = os.path.join(path, name)
        if tf.io.gfile.isdir(target):
          tf.io.gfile.rmtree(target)
        else:
          tf.io.gfile.remove(target)
      if old is None and not tf.io.gfile.listdir(path):
        tf.io.gfile.rmtree(path)
    except tf.errors.OpError as e:
      logging.warning('Could not remove what the failed download left in '
                      '%s: %s', path, e)


def _why(error) -> str:
  """A download failure in a few words: requests' connection errors run to
  several hundred characters around the one fact that matters."""
  kind, text = type(error).__name__, _first_line(error)
  host = re.search(r"host='([^']+)'", text)
  if host and re.search('Connection|Proxy|Timeout|Resolution', kind + text):
    return f'cannot reach {host.group(1)} ({kind}): no network?'
  return f'{kind}: {text[:300]}'



@contextlib.contextmanager
def _few_download_attempts():
  from tensorflow_datasets.core.download import downloader  # pylint: disable=g-import-not-at-top
  before = getattr(downloader, 'MAX_RETRIES', None)
  if before is not None:  # TFDS reads it at every request.
    downloader.MAX_RETRIES = min(before, _DOWNLOAD_ATTEMPTS)
  try:
    yield
  finally:
    if before is not None:
      downloader.MAX_RETRIES = before


def describe(name, data_dir) -> str:
  """What a prepared dataset is stored as, for the 'already prepared' line."""
  builder = builder_of(name, data_dir)
  formats = builder.info.available_file_formats()
  if tfds.core.FileFormat.ARRAY_RECORD in formats:
    return f'{name} is prepared as ArrayRecord in {builder.data_dir}'
  return (f'{name} is prepared as {builder.info.file_format.value} in '
          f'{builder.data_dir}; training reads it as it is, and '
          f'`{tfds_common.prepare_command(name, builder.data_dir_root)} '
          '--convert` rewrites it as ArrayRecord')


def _first_line(error) -> str:
  text = str(getattr(error, 'message', '') or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _define(fv, argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  return dict(
      data_dir=flags.DEFINE_string(
          'data_dir', None, 'TFDS data directory (default: TFDS_DATA_DIR or '
          '~/tensorflow_datasets).', flag_values=fv),
      convert=flags.DEFINE_bool(
          'convert', False, 'Rewrite a dataset prepared as TFRecord as '
          'ArrayRecord, in place.', flag_values=fv),
      keep_tfrecord=flags.DEFINE_bool(
          'keep_tfrecord', False, 'With --convert: keep the TFRecord files '
          '(default: removed once the ArrayRecord ones are in place).',
          flag_values=fv),
      folder=flags.DEFINE_string(
          'folder', None, 'Pack this image folder into a TFDS dataset '
          '(--name).', flag_values=fv),
      name=flags.DEFINE_string(
          'name', None, "With --folder: the new dataset's name.",
          flag_values=fv))


def _body(f, names):
  from contrastive_jax.data import convert, pack_folder  # pylint: disable=g-import-not-at-top
  # TFDS warns about what this command is about to create (an empty
  # version folder); its progress bars do not go through logging.
  logging.set_verbosity(logging.ERROR)
  folder, name, data_dir = f['folder'].value, f['name'].value, f[
      'data_dir'].value
  converting, keep_tfrecord = f['convert'].value, f['keep_tfrecord'].value
  if folder is not None:
    if names or converting or keep_tfrecord:
      raise UserError('--folder takes --name and --data_dir only, no dataset '
                      'name, --convert or --keep_tfrecord')
    if not name:
      raise UserError('--folder needs --name=NAME, the name of the new '
                      'dataset')
  elif len(names) != 1 or name is not None:
    raise UserError('expected one dataset name: python -m '
                    'contrastive_jax.prepare NAME [--data_dir=DIR] '
                    '[--convert], or --folder=PATH --name=NAME')
  elif keep_tfrecord and not converting:
    raise UserError('--keep_tfrecord goes with --convert')
  if folder is not None:
    print(pack_folder.pack(folder, name, data_dir))
  elif converting:
    print(convert.convert(names[0], data_dir, keep_tfrecord=keep_tfrecord))
  elif sources.kind_of(names[0]) != 'tfds':
    print(f'{names[0]} needs no preparation: training reads it directly')
  elif download_and_prepare(names[0], data_dir):
    print(describe(names[0], data_dir))
  else:
    print(f'already prepared: {describe(names[0], data_dir)}')


TOOL = cli.Tool(
    usage='python -m contrastive_jax.prepare NAME [--data_dir=DIR] '
    '[--convert [--keep_tfrecord]] | --folder=PATH --name=NAME',
    define=_define, body=_body, positional=True)


run, main = cli.entry_points(TOOL)


if __name__ == '__main__':
  main()
