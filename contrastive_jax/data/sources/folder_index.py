"""An image folder's split, indexed once per run and kept in the workdir.

Example i of a split is the i-th of its image files in sorted order (see
folder_layout.py for the layouts, labels and slices). A resumed run must see
the same list, or its stream (a pure function of the example indices)
silently changes; so the first run writes it to
<workdir>/data_index/<split>.json:

  {"format": 1, "dataset": "folder:PATH", "split": "train",
   "directory": "PATH/train", "class_names": [...] or null,
   "num_files": N, "sha256": "<hex>", "files": ["class/name.jpg", ...]}

with the sha256 of the class names and the files (a damaged index file is
an error, not a different dataset), and <workdir>/data_index/
class_names.json, the class names every split and job of the run uses.

`build` only reads: every process lists the folder itself and checks it
against the stored index, so all of them go on or stop alike, and a run
that stops on bad input leaves its workdir as it was. A folder that no
longer matches stops the run with one DataError naming how many files were
added and removed, unless `allow_changed_files`: then it goes on with the
new list. `store` writes what `build` found (process 0 only, once the run
starts; each file atomically, a temporary file renamed). A slice
('train[:10%]') uses its split's index.

Listing is the slow part (seconds for 1.28 M files), so a process lists a
directory once and keeps the result: the train, kNN and preview readers of
one run share it.
"""

import dataclasses
import hashlib
import json
import os
import threading

from absl import logging
import numpy as np

from contrastive_jax.data.sources import folder_layout
from contrastive_jax.data.sources import folder_listing
from contrastive_jax.errors import DataError

FORMAT = 1
CLASS_NAMES_FILE = 'class_names.json'

_listings = {}
_listings_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """A split's examples: file i is `directory`/`files[i]`, label
  `labels[i]` (-1 throughout when `class_names` is None)."""
  dataset: str
  split: str
  directory: str
  files: list
  labels: np.ndarray
  class_names: tuple | None
  ignored: dict
  # The whole split ('train' of 'train[:10%]'), as `store` writes it.
  split_name: str
  split_files: list
  # Whether the workdir already holds this index (nothing to store).
  stored: bool


def listing(directory: str,
            dataset_root: str | None = None) -> folder_listing.Listing:
  """`folder_listing.list_tree(directory)`, once per process."""
  with _listings_lock:
    if directory not in _listings:
      _listings[directory] = folder_listing.list_tree(
          directory, dataset_root=dataset_root)
    return _listings[directory]


def forget_listings():
  """Lists again on the next call (a new run is a new process; tests)."""
  with _listings_lock:
    _listings.clear()


def digest(files, class_names) -> str:
  h = hashlib.sha256(json.dumps(class_names).encode())
  # NUL cannot occur in a path: joined, the list has one reading.
  h.update(b'\0'.join(f.encode('utf-8', 'surrogateescape') for f in files))
  return h.hexdigest()


def index_dir(workdir):
  return folder_listing.join(workdir, 'data_index')


def index_file(workdir, split_name):
  safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in split_name)
  return folder_listing.join(index_dir(workdir), f'{safe}.json')


def build(root: str, split: str, *,
          workdir: str | None = None,
          allow_changed_files: bool = False) -> SplitIndex:
  """The index of `split` (maybe sliced) of folder `root`, checked against
  the one stored in `workdir` (see the module docstring). Writes nothing."""
  dataset = f'folder:{root}'
  name, _, _ = folder_layout.parse_split(split)
  if not folder_listing.is_dir(root):
    raise DataError(f'{dataset}: {folder_listing.why_not_a_dir(root)}')
  top = folder_listing.scan(root)
  directory = folder_layout.split_directory(root, name, top)
  if directory == root:
    logging.info('%s has no split subfolders: split %r is every image under '
                 'it, unlabelled', dataset, name)
    classes = None
  else:
    entries = folder_listing.scan(directory)
    classes = folder_layout.class_dirs(entries)
    if entries.images and entries.dirs:
      logging.warning('%s split %r: %s holds %d images next to %d subfolders, '
                      'so it is read as unlabelled (labels come from class '
                      'subfolders holding every image)', dataset, name,
                      directory, len(entries.images), len(entries.dirs))
  found = listing(directory, dataset_root=root)
  if not found.images:
    raise folder_layout.no_images_error(dataset, split, directory,
                                        found.ignored)
  if found.ignored:
    # Hidden files are expected (.DS_Store); others may be images of a
    # format we do not read.
    level = (logging.INFO if set(found.ignored) == {'(hidden)'}
             else logging.WARNING)
    logging.log(level, '%s split %r: %d images; ignored %s', dataset, name,
                len(found.images),
                folder_listing.describe_ignored(found.ignored))
  files = found.images
  class_names, labels = None, np.full(len(files), -1, np.int64)
  if classes is not None:
    class_names, where = _class_names(root, name, top, classes, workdir)
    labels = folder_layout.labels_of(files, class_names, dataset, name, where)
  stored = workdir is not None and _matches_stored(
      workdir, dataset, name, files, class_names,
      allow_changed_files=allow_changed_files)
  sliced, sliced_labels = folder_layout.take_slice(files, labels, split)
  return SplitIndex(dataset=dataset, split=split, directory=directory,
                    files=sliced, labels=sliced_labels,
                    class_names=class_names, ignored=dict(found.ignored),
                    split_name=name, split_files=files, stored=stored)


def store(index: SplitIndex, workdir: str):
  """Writes the run's class names (unless kept already) and `index`'s
  split (unless `index.stored`) into `workdir`."""
  if index.class_names is not None:
    path = folder_listing.join(index_dir(workdir), CLASS_NAMES_FILE)
    if _read_json(path) is None:
      _write_atomic(path, json.dumps(list(index.class_names)))
  if not index.stored:
    record = {
        'format': FORMAT, 'dataset': index.dataset,
        'split': index.split_name, 'directory': index.directory,
        'class_names': (None if index.class_names is None
                        else list(index.class_names)),
        'num_files': len(index.split_files),
        'sha256': digest(index.split_files, index.class_names),
        'files': index.split_files}
    _write_atomic(index_file(workdir, index.split_name),
                  json.dumps(record, separators=(',', ':')))


def _class_names(root, name, top, classes, workdir):
  """(class names, where they come from): the run's stored ones, else the
  'train' split's class folders, else this split's own."""
  if workdir:
    path = folder_listing.join(index_dir(workdir), CLASS_NAMES_FILE)
    stored = _read_json(path)
    if stored is not None:
      if not (isinstance(stored, list) and
              all(isinstance(c, str) for c in stored)):
        raise DataError(f'{path} is not a list of class names; delete it to '
                        'take them from the folder again')
      return tuple(stored), f'this run ({path})'
  if name != 'train' and 'train' in top.dirs:
    train = folder_listing.join(root, 'train')
    train_classes = folder_layout.class_dirs(folder_listing.scan(train))
    if train_classes is not None:
      return tuple(train_classes), "split 'train'"
  return tuple(classes), f'split {name!r}'


def _matches_stored(workdir, dataset, name, files, class_names, *,
                    allow_changed_files):
  """Whether the workdir's index of split `name` holds exactly `files` and
  `class_names` (False: none yet, or a change allowed)."""
  path = index_file(workdir, name)
  stored = _read_json(path)
  if stored is None:
    return False
  old_files, old_classes = _check_stored(path, stored)
  if stored['sha256'] == digest(files, class_names):
    return True
  added = sorted(set(files) - set(old_files))
  removed = sorted(set(old_files) - set(files))
  if added or removed:
    example = f'added {added[0]}' if added else f'removed {removed[0]}'
    change = (f'{_files(len(added))} added, {len(removed)} removed (e.g. '
              f'{example})')
  else:
    change = f'its class names changed (were {len(old_classes or ())})'
  message = (f'split {name!r} of {dataset} no longer matches the index this '
             f'run was started with ({path}): {change}')
  if not allow_changed_files:
    raise DataError(f'{message}; restore the folder, or set '
                    'config.data.allow_changed_files=True to go on with the '
                    'new list')
  logging.warning('%s; going on with the new list '
                  '(config.data.allow_changed_files=True)', message)
  return False


def _files(count):
  return f'{count} file{"" if count == 1 else "s"}'


def _check_stored(path, stored):
  """(files, class names) of a stored index; a DataError if it is damaged."""
  try:
    files, classes = stored['files'], stored['class_names']
    intact = (stored['format'] == FORMAT and
              stored['sha256'] == digest(files, classes))
  except (KeyError, TypeError, AttributeError):
    intact = False
  if not intact:
    raise DataError(f'{path} is damaged or from another version (its '
                    'sha256 does not match); delete it to index the folder '
                    'again')
  return files, classes


def _read_json(path):
  """The parsed file, None when it does not exist; a DataError when it
  cannot be parsed."""
  try:
    text = _read_text(path)
  except FileNotFoundError:
    return None
  except Exception as e:  # pylint: disable=broad-except
    # OSError locally; tf.errors.OpError (not an OSError) through gfile.
    if not folder_listing.is_file_system_error(e):
      raise
    raise DataError(f'cannot read {path}: '
                    f'{folder_listing.first_line(e)}') from None
  try:
    return json.loads(text)
  except ValueError:
    raise DataError(f'{path} is not valid JSON; delete it to index the '
                    'folder again') from None


def _read_text(path):
  if not folder_listing.is_remote(path):
    with open(path, encoding='utf-8') as f:
      return f.read()
  from tensorflow.io import gfile  # pylint: disable=g-import-not-at-top
  if not gfile.exists(path):
    raise FileNotFoundError(path)
  with gfile.GFile(path, 'r') as f:
    return f.read()


def _write_atomic(path, text):
  """Writes `path` so that a reader sees the old file or the whole new one."""
  temporary = f'{path}.tmp-{os.getpid()}'
  if folder_listing.is_remote(path):
    from tensorflow.io import gfile  # pylint: disable=g-import-not-at-top
    gfile.makedirs(os.path.dirname(path))
    with gfile.GFile(temporary, 'w') as f:
      f.write(text)
    gfile.rename(temporary, path, overwrite=True)
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(temporary, 'w', encoding='utf-8') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)
