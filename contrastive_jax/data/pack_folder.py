"""Packs an image folder (`folder:PATH`) into a TFDS dataset stored as
ArrayRecord: a few large files instead of millions of small ones, read by
index like any prepared TFDS dataset.

The splits, files and labels are the ones the folder source reads
(folder_layout.py): PATH/<split>/<class>/... or one unlabelled 'train'.
Each image's bytes are stored as the folder source reads them (no
re-encoding), with its path relative to PATH as 'file_name'; unreadable
or damaged files are left out and counted. Examples are in TFDS's
deterministic shuffled order, like a downloaded TFDS dataset, so that a
slice such as 'train[:10%]' mixes the classes.
"""

import os
import re

import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data import sources
from contrastive_jax.data.sources import folder_layout
from contrastive_jax.data.sources import folder_listing
from contrastive_jax.errors import ConfigError, DataError

VERSION = '1.0.0'
_NAME = re.compile(r'[a-z][a-z0-9_]*')


def folder_splits(root: str) -> list[str]:
  """The split names of the folder: its split subfolders, else 'train'."""
  top = folder_listing.scan(root)
  return sorted(set(top.dirs) & set(folder_layout.SPLIT_NAMES)) or ['train']


def check_name(name, data_dir):
  """A ConfigError unless `name` is a free TFDS dataset name."""
  if not isinstance(name, str) or not _NAME.fullmatch(name):
    raise ConfigError(f'--name={name!r}: expected a dataset name of lower '
                      'case letters, digits and _, starting with a letter')
  if name in tfds.list_builders(with_community_datasets=False):
    raise ConfigError(f'--name={name!r} is a TFDS dataset of its own; choose '
                      'another name')
  found = os.path.join(data_dir or tfds.core.constants.DATA_DIR, name)
  if tf.io.gfile.exists(found):
    raise ConfigError(f'--name={name!r}: {found} already exists; choose '
                      'another name or delete it')


def pack(root: str, name: str, data_dir: str | None = None) -> str:
  """Writes folder `root` as TFDS dataset `name` into `data_dir` (ArrayRecord);
  returns a line saying what it wrote."""
  check_name(name, data_dir)
  dataset = sources.FOLDER_PREFIX + root
  opened = {split: sources.open_source(dataset, split)
            for split in folder_splits(root)}
  class_names = _class_names(dataset, opened)
  features = {
      'image': tfds.features.Image(shape=(None, None, 3)),
      'file_name': tfds.features.Text(),
  }
  if class_names is not None:
    features['label'] = tfds.features.ClassLabel(names=class_names)
  left_out = {}
  split_datasets = {split: _examples(source, root, class_names is not None,
                                     left_out)
                    for split, source in opened.items()}
  try:
    # TFDS writes into a temporary directory and renames it when done:
    # a failure leaves nothing behind.
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=VERSION,
        features=tfds.features.FeaturesDict(features),
        split_datasets=split_datasets, data_dir=data_dir,
        file_format='array_record',
        description=f'Images of {root}, packed by contrastive_jax.prepare.')
  except (OSError, RuntimeError, ValueError, tf.errors.OpError) as e:
    raise DataError(f'could not pack {root} as {name}: {type(e).__name__}: '
                    f'{folder_listing.first_line(e)}') from None
  counts = ', '.join(
      f'{split} {source.num_examples - len(left_out.get(split, ()))}'
      for split, source in opened.items())
  skipped = sum(len(v) for v in left_out.values())
  note = f'; left out {skipped} unreadable or damaged files' if skipped else ''
  return (f'packed {root} as {name} (ArrayRecord, {counts} images{note}); '
          f'train with --config.dataset={name}'
          + (f' --config.data_dir={data_dir}' if data_dir else ''))


def _class_names(dataset, opened):
  """The class names every labelled split shares (None: all unlabelled)."""
  labelled = {split: s.class_names for split, s in opened.items()
              if s.class_names is not None}
  if not labelled:
    return None
  names = set(labelled.values())
  if len(names) > 1:
    raise DataError(f'{dataset}: its splits have different class folders '
                    f'({", ".join(sorted(labelled))}); give every split the '
                    "same classes, or a 'train' split that has them all")
  return list(names.pop())


def _examples(source, root, labelled, left_out):
  """(key, example) of every good file of `source`, read as training reads
  them: groups of files per call, in parallel. Bad files go to
  `left_out[split]`."""
  ids = source.example_ids()
  reads = tf.data.Dataset.range(source.num_examples).batch(sources.READ_GROUP)
  reads = reads.map(lambda i: (i, source.read(i)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  prefix = root.rstrip('/') + '/'
  for indices, record in reads.as_numpy_iterator():
    # A bad file is read as its next good one: leave it out instead.
    bad = source.bad_files()
    for i, encoded, label in zip(indices, record['encoded'], record['label']):
      path = ids[i]
      if path in bad:
        left_out.setdefault(source.split, set()).add(path)
        continue
      relative = path[len(prefix):] if path.startswith(prefix) else path
      example = {'image': encoded, 'file_name': relative}
      if labelled:
        example['label'] = int(label)
      yield relative, example


