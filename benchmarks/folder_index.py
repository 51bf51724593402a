"""Time to index an image folder: folder:PATH's start-up cost.

  python benchmarks/folder_index.py [--files=100000] [--classes=1000]

Builds an ImageNet-style tree in a temporary directory, train/<class>/*.jpg
with `--files` empty files in `--classes` class folders (listing reads no
file's bytes, so empty files time it the same), then times, the median of
`--repeats` runs each:

  list (1 thread)    folder_listing.list_tree, one directory at a time
  list (N threads)   the same with the thread pool a run uses
  index, first run   folder_index.build and .store: list, label, hash,
                     write <workdir>/data_index/train.json
  index, resume      folder_index.build again: list, label, hash, read and
                     check the stored index

The directories were just written, so they are in the page cache: on a
network file system or gs:// each directory's listing waits on a round
trip instead, which is what the thread pool hides.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# After the path: the benchmark runs from a checkout.
from contrastive_jax.data.sources import (  # noqa: E402
    folder_index, folder_listing)


def build_tree(root, files, classes):
  """root/train/n<class>/n<class>_<k>.JPEG, ImageNet's names."""
  for c in range(classes):
    name = f'n{c:08d}'
    directory = os.path.join(root, 'train', name)
    os.makedirs(directory)
    for k in range(c, files, classes):
      with open(os.path.join(directory, f'{name}_{k}.JPEG'), 'wb'):
        pass


def timed(fn, repeats):
  times = []
  for _ in range(repeats):
    folder_index.forget_listings()
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--files', type=int, default=100_000)
  parser.add_argument('--classes', type=int, default=1000)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, 'data')
    start = time.perf_counter()
    build_tree(root, args.files, args.classes)
    print(f'built {args.files} files in {args.classes} class folders in '
          f'{time.perf_counter() - start:.1f} s')
    train = os.path.join(root, 'train')
    workdir = os.path.join(tmp, 'run')
    index_file = folder_index.index_file(workdir, 'train')

    def first_run():
      if os.path.exists(index_file):
        os.remove(index_file)
      folder_index.store(folder_index.build(root, 'train', workdir=workdir),
                         workdir)

    cases = [
        ('list (1 thread)',
         lambda: folder_listing.list_tree(train, workers=1)),
        (f'list ({folder_listing.WORKERS} threads)',
         lambda: folder_listing.list_tree(train)),
        ('index, first run', first_run),
        ('index, resume', lambda: folder_index.build(root, 'train',
                                                     workdir=workdir)),
    ]
    print(f'{"case":22} {"seconds":>8} {"files/s":>10}  (median of '
          f'{args.repeats}; [each run])')
    for name, fn in cases:
      median, times = timed(fn, args.repeats)
      runs = ' '.join(f'{t:.2f}' for t in times)
      print(f'{name:22} {median:8.2f} {args.files / median:10.0f}  [{runs}]')
    size = os.path.getsize(index_file)
    print(f'index file: {size / 2**20:.1f} MiB for {args.files} files')


if __name__ == '__main__':
  main()
