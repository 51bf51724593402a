"""Listing a tree of image files fast, on a local disk or at a gs:// path.

An ImageNet-sized folder holds 1.28 M files in 1,000 directories. Listed
one directory after another that is seconds on a local disk but minutes on
a network file system or GCS, where each listing waits on a round trip; so
a pool of threads lists the directories, a level of the tree at a time (a
thread waiting on I/O does not hold the GIL). Local paths use os.scandir;
paths with a scheme (gs://, s3://, ...) go through tf.io.gfile, imported
only then.

Directory links: a link to a directory outside the dataset (another disk)
is followed, as a researcher expects; a link whose target is inside the
dataset folder (another split, the dataset itself, or this split again) or
above it (a loop) is not, since it would read images twice or into the wrong
split: it is counted among the ignored entries as '(directory link)'.

Image files are recognised by their extension, so a listing never stats a
file (on NFS and GCS each stat is a round trip). Hidden entries (a leading
'.': macOS's '._x.jpg' resource forks, '.ipynb_checkpoints') are skipped:
they are never images of the dataset.
"""

import collections
import concurrent.futures
import dataclasses
import os

from contrastive_jax.errors import DataError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
# Directories listed at once: enough to hide GCS's ~50 ms per listing
# (gs://, or a gcsfuse mount: 1,000 class folders take ~1 min one by one).
# Threads cost where listings never wait: 1.28 M files in the page cache
# list in 1.2 s with 1 thread, 2.9 s with 32 (each entry takes the GIL).
WORKERS = 32


LINK = '(directory link)'


@dataclasses.dataclass
class Entries:
  """The names in one directory, by kind; `links`: the directory links
  among `dirs` (local listings only)."""
  images: list[str] = dataclasses.field(default_factory=list)
  dirs: list[str] = dataclasses.field(default_factory=list)
  ignored: list[str] = dataclasses.field(default_factory=list)
  links: set = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Listing:
  """Every image under a directory: sorted paths relative to it, '/'-joined,
  and the other files' count by extension ('(hidden)' for hidden ones)."""
  images: list[str]
  ignored: collections.Counter


def is_remote(path: str) -> bool:
  return '://' in path


def join(parent: str, name: str) -> str:
  """`parent`/`name` for local and remote paths alike ('' is no parent)."""
  return f'{parent.rstrip("/")}/{name}' if parent else name


def is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def is_dir(path: str) -> bool:
  if is_remote(path):
    from tensorflow.io import gfile  # pylint: disable=g-import-not-at-top
    return gfile.isdir(path)
  return os.path.isdir(path)


def why_not_a_dir(path: str) -> str:
  """Why `path` is no directory we can list, in a few words: for a remote
  path what was tried and what the file system said (an unreachable
  bucket, missing credentials, an unknown scheme), not only 'no such
  directory'."""
  if not is_remote(path):
    return 'no such directory'
  from tensorflow.io import gfile  # pylint: disable=g-import-not-at-top
  try:
    if gfile.exists(path):
      return 'not a directory (tf.io.gfile.isdir is False)'
    return ('no such directory (tf.io.gfile found nothing there: check the '
            'bucket, the path and your credentials)')
  except Exception as e:  # pylint: disable=broad-except
    if not is_file_system_error(e):
      raise
    return (f'cannot reach it through tf.io.gfile ({type(e).__name__}: '
            f'{first_line(e)})')


def ignored_kind(name: str) -> str:
  if name == LINK:
    return LINK
  if name.startswith('.'):
    return '(hidden)'
  return os.path.splitext(name)[1].lower() or '(no extension)'


def scan(path: str) -> Entries:
  """One directory's entries; a DataError when it cannot be listed."""
  try:
    return _scan_remote(path) if is_remote(path) else _scan_local(path)
  except Exception as e:  # pylint: disable=broad-except
    if not is_file_system_error(e):
      raise
    raise DataError(f'cannot list {path}: {first_line(e)}') from None


def _scan_local(path):
  entries = Entries()
  with os.scandir(path) as it:
    for entry in it:
      name = entry.name
      if name.startswith('.'):
        entries.ignored.append(name)
      elif is_image(name):  # By name: no stat (see the module docstring).
        entries.images.append(name)
      elif entry.is_dir():  # Follows symlinks; list_tree decides which.
        entries.dirs.append(name)
        if entry.is_symlink():
          entries.links.add(name)
      else:
        entries.ignored.append(name)
  return entries


def _scan_remote(path):
  from tensorflow.io import gfile  # pylint: disable=g-import-not-at-top
  entries = Entries()
  for name in gfile.listdir(path):
    if name.endswith('/'):  # GCS marks directories with a trailing '/'.
      if name.strip('/') and not name.startswith('.'):
        entries.dirs.append(name.strip('/'))
    elif name.startswith('.'):
      entries.ignored.append(name)
    elif is_image(name):
      entries.images.append(name)
    elif gfile.isdir(join(path, name)):  # File systems without the '/'.
      entries.dirs.append(name)
    else:
      entries.ignored.append(name)
  return entries


def _dir_key(path):
  """A local directory's identity, to stop at symlink loops."""
  if is_remote(path):
    return None
  stat = os.stat(path)
  return stat.st_dev, stat.st_ino


def _scan_below(root, relative, ancestors):
  path = join(root, relative) if relative else root
  try:
    key = _dir_key(path)
  except OSError as e:
    raise DataError(f'cannot list {path}: {first_line(e)}') from None
  if key is not None and key in ancestors:  # A symlink back up the tree.
    return Entries(), ancestors
  return scan(path), ancestors | {key}


def _inside(path: str, folder: str) -> bool:
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _follow_link(link: str, dataset_root: str) -> bool:
  """Whether to list the directory link `link`: only when its target is
  outside `dataset_root` and not above it (see the module docstring)."""
  try:
    target = os.path.realpath(link)
  except OSError:
    return False
  root = os.path.realpath(dataset_root)
  return not (_inside(target, root) or _inside(root, target))


def list_tree(root: str, *, workers: int = WORKERS,
              dataset_root: str | None = None) -> Listing:
  """Every image file under `root`, at any depth (see `Listing`), one
  level of directories at a time, each level's listed in parallel.
  `dataset_root` (default `root`): the dataset folder `root` is a split
  of, for the directory-link rule."""
  dataset_root = root if dataset_root is None else dataset_root
  images, ignored = [], collections.Counter()
  level = [('', frozenset())]  # (path below root, its ancestors' keys)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    while level:
      scans = pool.map(lambda item: _scan_below(root, *item), level)
      below = []
      for (relative, _), (entries, ancestors) in zip(level, scans):
        prefix = relative + '/' if relative else ''
        images.extend([prefix + name for name in entries.images])
        ignored.update(ignored_kind(name) for name in entries.ignored)
        for name in entries.dirs:
          if name in entries.links and not _follow_link(
              join(root, prefix + name), dataset_root):
            ignored[LINK] += 1
            continue
          below.append((prefix + name, ancestors))
      level = below
  images.sort()
  return Listing(images, ignored)


def describe_ignored(ignored: collections.Counter) -> str:
  """'3 files (.txt: 2, (hidden): 1)', the most common kinds first."""
  total = sum(ignored.values())
  kinds = ', '.join(f'{kind}: {n}' for kind, n in ignored.most_common(5))
  more = ', ...' if len(ignored) > 5 else ''
  return f'{total} file{"s" if total != 1 else ""} ({kinds}{more})'


def is_file_system_error(error) -> bool:
  """An OSError, or the tf.errors.OpError (not an OSError) of tf.io.gfile;
  checked by module so that local listings never import TensorFlow."""
  return (isinstance(error, OSError) or
          type(error).__module__.startswith('tensorflow'))


def first_line(error):
  """A one-line description of an OSError or a TensorFlow error."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = str(getattr(error, 'message', '') or error).strip()
  return text.splitlines()[0][:200] if text else type(error).__name__
