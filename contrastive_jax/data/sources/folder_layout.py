"""Where a split lives in an image folder, its labels, and its slices.

Layouts (PATH is the folder of `folder:PATH`):
  * PATH/<split>/<class>/**/*.jpg: ImageNet's layout. The split is the
    subfolder named like it; when that holds only subfolders (no images of
    its own) they are the classes, and a label indexes the sorted class
    names of the 'train' split, so every split of the folder (and every
    job of a run: the class names are kept in its workdir) maps a class to
    the same label, whichever classes a split lacks.
  * PATH/<split>/ holding images itself (at any depth): an unlabelled
    split (label -1, class_names None), e.g. STL-10's 'unlabelled'.
  * PATH with no subfolder named like a split (train, val, validation,
    test, unlabelled, unlabeled, extra): one unlabelled tree, the single
    split 'train' of every image under PATH. A labelled folder must have
    the split level: folder:imagenet/train reads unlabelled images.
Any other split name is an error naming the splits the folder has.

Slices, as in TFDS: 'train[:10%]', 'train[:100]', 'train[10%:]',
'train[100:200]'. Percent boundaries round to the nearest example. A
folder's index order is sorted by class, so a slice takes its examples in a
fixed pseudo-random order stratified by class (a hash of each path), not
the first files: train[:10%] holds 10% of every class, and train[:1%] is
inside train[:10%].
"""

import hashlib
import re

import numpy as np

from contrastive_jax.data.sources import folder_listing
from contrastive_jax.errors import ConfigError, DataError

SPLIT_NAMES = ('train', 'val', 'validation', 'test', 'unlabelled',
               'unlabeled', 'extra')
_SPLIT = re.compile(r'([^\[\]:]+?)(?:\[(\d*)(%?):(\d*)(%?)\])?')


def parse_split(split: str):
  """'train[:10%]' -> ('train', (None, False), (10, True))."""
  match = _SPLIT.fullmatch(split) if isinstance(split, str) else None
  if not match or not match.group(1).strip():
    raise ConfigError(
        f'split {split!r}: expected a split name, optionally sliced as '
        'train[:10%], train[:100] or train[100:200]')
  name, start, start_pct, stop, stop_pct = match.groups()
  bound = lambda n, pct: (int(n), bool(pct)) if n else None
  if (start_pct and not start) or (stop_pct and not stop):
    raise ConfigError(f'split {split!r}: a % needs a number before it')
  for number, pct in ((start, start_pct), (stop, stop_pct)):
    if pct and int(number) > 100:
      raise ConfigError(f'split {split!r}: a percentage is at most 100%, '
                        f'got {number}%')
  return name, bound(start, start_pct), bound(stop, stop_pct)


def slice_bounds(count, start, stop):
  """[a, b) of `count` examples for the bounds of `parse_split`."""

  def position(bound, default):
    if bound is None:
      return default
    value, percent = bound
    if percent:
      # Like TFDS and the digits splits: round to the nearest example.
      return int(round(count * min(value, 100) / 100))
    return min(value, count)

  return position(start, 0), max(position(start, 0), position(stop, count))


def spread_order(files, labels):
  """int64 [N]: the order a slice takes `files` in. Within a class, by a
  hash of the path; across classes, by the fraction of its class an
  example completes, so any prefix holds each class in proportion. It
  depends only on the paths and labels, not on the machine or the run."""
  files = list(files)
  labels = np.asarray(labels, np.int64)
  hashes = np.array([int.from_bytes(hashlib.sha256(
      f.encode('utf-8', 'surrogateescape')).digest()[:8], 'big') >> 1
                     for f in files], np.int64)
  rank = np.empty(len(files), np.float64)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    in_class = members[np.argsort(hashes[members], kind='stable')]
    rank[in_class] = (np.arange(len(in_class)) + 0.5) / len(in_class)
  return np.lexsort((hashes, rank))


def take_slice(files, labels, split):
  """(files, labels) of `split` ('train[:10%]') from the whole split's,
  the kept files in their index order."""
  _, start, stop = parse_split(split)
  if start is None and stop is None:
    return list(files), np.asarray(labels, np.int64)
  first, last = slice_bounds(len(files), start, stop)
  if first == last:
    raise ConfigError(f'split {split!r} holds no examples of the '
                      f'{len(files)} in its split')
  keep = np.sort(spread_order(files, labels)[first:last])
  return [files[i] for i in keep], np.asarray(labels, np.int64)[keep]


def split_directory(root, name, top):
  """The directory of split `name` in folder `root` (whose entries are
  `top`): root/name, or root itself for an unlabelled tree's 'train'."""
  dataset = f'folder:{root}'
  if name in top.dirs:
    return folder_listing.join(root, name)
  present = sorted(top.dirs)
  if set(present) & set(SPLIT_NAMES):
    raise ConfigError(f'split {name!r} of {dataset}: no such subfolder; its '
                      f'splits are {", ".join(present)}')
  if name == 'train':
    return root
  raise ConfigError(
      f'split {name!r} of {dataset}: the folder has no split subfolders '
      "(train/, val/, ...), so it is one unlabelled split, 'train'")


def class_dirs(entries):
  """The sorted class folders of a split directory of `entries`, or None
  when it is unlabelled (it holds images itself, or no subfolders)."""
  if entries.images or not entries.dirs:
    return None
  return sorted(entries.dirs)


def labels_of(files, class_names, dataset, split, where):
  """int64 labels of a labelled split's files ('class/.../x.jpg'); a
  DataError naming the class folders missing from `class_names`."""
  index = {name: i for i, name in enumerate(class_names)}
  labels = np.fromiter((index.get(f.split('/', 1)[0], -1) for f in files),
                       np.int64, count=len(files))
  if (labels < 0).any():
    unknown = sorted({f.split('/', 1)[0] for f, label in zip(files, labels)
                      if label < 0})
    raise DataError(
        f'split {split!r} of {dataset} has class folders that are not among '
        f'the {len(class_names)} classes of {where}: {", ".join(unknown[:5])}'
        f'{", ..." if len(unknown) > 5 else ""}')
  return labels


def no_images_error(dataset, split, directory, ignored):
  extra = (f'; ignored {folder_listing.describe_ignored(ignored)}'
           if ignored else '')
  kinds = ' '.join(folder_listing.IMAGE_EXTENSIONS)
  return DataError(f'split {split!r} of {dataset}: no image files ({kinds}) '
                   f'under {directory}{extra}')
