"""Rewrites a TFDS dataset prepared as TFRecord as ArrayRecord, in place.

TFDS 4.9's own converter (`tfds convert_format`) imports apache_beam even
when it does not use it, so this is ours: every shard becomes an ArrayRecord
shard of the same name (`array_record` for `tfrecord`) holding the same
serialized examples in the same order, and dataset_info.json's file format
changes to ArrayRecord.

Nothing is lost on failure. Shards are written under TFDS's temporary names
(`incomplete.<hex>.<name>`, which TFDS ignores and cleans up) and their
record counts checked against dataset_info.json; only then are they renamed,
and the dataset switches format in one atomic step, the replacement of
dataset_info.json. Until that step the dataset reads as the TFRecord it
was; after it, as ArrayRecord. The TFRecord shards are removed only then,
unless kept (`keep_tfrecord`): then, as TFDS's own converter does in place,
dataset_info.json lists ArrayRecord as an alternative format, which the
random-access readers (`as_data_source`, training) take, while
`as_dataset` (which cannot read ArrayRecord) keeps reading the TFRecord.

Run one conversion of a dataset at a time, and not while a job reads it.
"""

import concurrent.futures
import json
import os
import re
import shutil
import uuid

from array_record.python import array_record_module
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data.sources import tfds_common
from contrastive_jax.data.sources import tfrecord_index
from contrastive_jax.errors import DataError

ARRAY_RECORD = tfds.core.FileFormat.ARRAY_RECORD
TFRECORD = tfds.core.FileFormat.TFRECORD
# TFDS's temporary-file naming (utils.is_incomplete_file).
_INCOMPLETE = re.compile(r'^incomplete\.[0-9a-f]{32}\.')
# Shards converted at once: reading and writing wait on the disk.
_WORKERS = 4
# Free space to keep beyond the new shards' size.
_DISK_MARGIN = 1.05


def shard_plan(builder):
  """[(TFRecord path, ArrayRecord path, record count)] of every shard of
  every split, in split and shard order."""
  plan = []
  for split_info in builder.info.splits.values():
    template = split_info.filename_template
    if template is None or not split_info.shard_lengths:
      raise DataError(f'split {split_info.name!r} of {builder.data_dir} '
                      'records no shard files to convert')
    target = template.replace(filetype_suffix=ARRAY_RECORD.file_suffix)
    n = len(split_info.shard_lengths)
    for i, length in enumerate(split_info.shard_lengths):
      plan.append((os.fspath(template.sharded_filepath(
          shard_index=i, num_shards=n)), os.fspath(target.sharded_filepath(
              shard_index=i, num_shards=n)), int(length)))
  return plan


def convert_shard(source: str, target: str, num_records: int) -> None:
  """Writes the records of TFRecord `source` to ArrayRecord `target`, then
  checks that `target` holds `num_records` records ending with the same
  one."""
  writer = array_record_module.ArrayRecordWriter(target, 'group_size:1')
  count, last = 0, None
  try:
    # tf.data checks every record's CRCs: damaged input fails here.
    for last in tf.data.TFRecordDataset(source).as_numpy_iterator():
      writer.write(last)
      count += 1
  finally:
    writer.close()
  reader = array_record_module.ArrayRecordReader(target)
  try:
    written = reader.num_records()
    same_end = count == 0 or reader.read([count - 1])[0] == last
  finally:
    reader.close()
  if not count == written == num_records or not same_end:
    raise DataError(f'{source}: {count} records read, {written} written, '
                    f'{num_records} expected')


def convert(name: str, data_dir: str | None = None, *,
            keep_tfrecord: bool = False, workers: int = _WORKERS) -> str:
  """Converts dataset `name` in place; returns a line saying what it did.
  Raises DataError (the dataset unchanged) on any failure."""
  builder = tfds_common.get_builder(name, data_dir)
  if not builder.is_prepared():
    raise DataError(tfds_common.missing_message(builder, name))
  info, directory = builder.info, builder.data_dir
  if info.file_format == ARRAY_RECORD:
    return f'{name} is already ArrayRecord ({directory})'
  if ARRAY_RECORD in info.available_file_formats():
    return (f'{name} already has ArrayRecord files next to its TFRecord ones '
            f'({directory}); training reads those')
  if info.file_format != TFRECORD:
    raise DataError(f'dataset {name!r} is stored as {info.file_format}; '
                    'only TFRecord is converted')
  if not tfrecord_index.is_local(directory):
    raise DataError(f'{directory}: only local datasets are converted; '
                    'convert a local copy and upload it')
  plan = shard_plan(builder)
  _remove_leftovers(directory)
  _check_space(directory, plan)
  try:
    _write_all(plan, workers)
  except DataError as e:
    raise DataError(
        f'could not convert {name!r}, left unchanged: {e}') from None
  except (OSError, RuntimeError, ValueError, tf.errors.OpError) as e:
    detail = (getattr(e, 'message', None) or str(e) or '').strip()
    detail = detail.splitlines()[0] if detail else ''
    raise DataError(f'could not convert {name!r}, left unchanged: '
                    f'{type(e).__name__}: {detail[:300]}') from None
  _switch_format(directory, keep_tfrecord)
  if keep_tfrecord:
    return (f'converted {name} to ArrayRecord in {directory} '
            f'({len(plan)} shards; the TFRecord shards kept)')
  shutil.rmtree(os.path.join(directory, tfrecord_index.CACHE_SUBDIR),
                ignore_errors=True)
  try:
    for source, _, _ in plan:
      os.remove(source)
  except OSError as e:
    # Converted all the same: a stray TFRecord shard is only wasted space.
    return (f'converted {name} to ArrayRecord in {directory} '
            f'({len(plan)} shards), but could not remove the TFRecord '
            f'shards: {e}')
  return (f'converted {name} to ArrayRecord in {directory} '
          f'({len(plan)} shards; the TFRecord shards removed)')


def _write_all(plan, workers):
  """Writes every shard under a temporary name, then renames them all;
  removes whatever it wrote on failure."""
  temporary = [os.path.join(os.path.dirname(target),
                            f'incomplete.{uuid.uuid4().hex}.'
                            f'{os.path.basename(target)}')
               for _, target, _ in plan]
  try:
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
      jobs = [pool.submit(convert_shard, source, tmp, count)
              for (source, _, count), tmp in zip(plan, temporary)]
      for job in jobs:
        job.result()
    for tmp, (_, target, _) in zip(temporary, plan):
      os.replace(tmp, target)
  except BaseException:
    for path in temporary + [target for _, target, _ in plan]:
      if os.path.exists(path):
        os.remove(path)
    raise


def _switch_format(directory, keep_tfrecord):
  """The commit: dataset_info.json names the ArrayRecord files, replaced
  atomically."""
  path = os.path.join(directory, 'dataset_info.json')
  with open(path) as f:
    info = json.load(f)
  others = [f for f in info.get('alternativeFileFormats', [])
            if f not in (ARRAY_RECORD.value, TFRECORD.value)]
  if keep_tfrecord:
    # TFDS's own layout for a format added in place: `as_dataset` (which
    # cannot read ArrayRecord) keeps the TFRecord files, `as_data_source`
    # and our reader take the ArrayRecord ones.
    info['fileFormat'] = TFRECORD.value
    others.append(ARRAY_RECORD.value)
  else:
    info['fileFormat'] = ARRAY_RECORD.value
  if others:
    info['alternativeFileFormats'] = others
  else:
    info.pop('alternativeFileFormats', None)
  tmp = os.path.join(directory, f'incomplete.{uuid.uuid4().hex}.'
                     'dataset_info.json')
  with open(tmp, 'w') as f:
    json.dump(info, f, indent=4)
  os.replace(tmp, path)


def _remove_leftovers(directory):
  """Deletes temporary ArrayRecord shards of an interrupted conversion."""
  for entry in os.listdir(directory):
    if _INCOMPLETE.match(entry) and '.array_record-' in entry:
      os.remove(os.path.join(directory, entry))


def _check_space(directory, plan):
  missing = [source for source, _, _ in plan if not os.path.isfile(source)]
  if missing:
    raise DataError(f'{len(missing)} TFRecord shards named in '
                    f'{directory}/dataset_info.json are missing, e.g. '
                    f'{missing[0]}; nothing converted')
  needed = sum(os.path.getsize(source) for source, _, _ in plan)
  free = shutil.disk_usage(directory).free
  if free < needed * _DISK_MARGIN:
    raise DataError(f'converting {directory} needs {needed / 2**30:.1f} GiB '
                    f'free, {free / 2**30:.1f} GiB left on its disk')
