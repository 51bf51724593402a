"""scikit-learn's handwritten digits: a small real dataset, no download.

1,797 8x8 greyscale digits (values 0..16) ship inside scikit-learn, so the
`digits` configs train and evaluate offline, in CI and on a laptop. The
pipeline's ops resize them to the configured image size.
"""

import functools
import re

import numpy as np

from contrastive_jax import cli
from contrastive_jax.errors import ConfigError

SPLITS = ('train', 'test')
_TEST_FRACTION = 0.2
# Fixed forever: changing it silently changes every digits result.
_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _load():
  """Returns (images uint8 [N, 8, 8, 3] in 0..255, labels int64, split ids)."""
  from sklearn.datasets import load_digits  # Heavy import, only when used.
  digits = load_digits()
  gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.repeat(gray[..., None], 3, axis=-1)
  labels = digits.target.astype(np.int64)

  # Stratified: every class keeps the same train/test proportion, so the
  # small test set is not skewed towards some digits.
  rng = np.random.default_rng(_SPLIT_SEED)
  is_test = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    num_test = int(round(len(members) * _TEST_FRACTION))
    is_test[rng.permutation(members)[:num_test]] = True
  return images, labels, is_test


def load_digits_split(split: str) -> dict:
  """Returns {'image': uint8 [N, 8, 8, 3], 'label': int64 [N]} for a split.

  'train' holds about 80% of each class, 'test' the rest; the split is the
  same on every machine and call. Examples keep scikit-learn's order. As in
  TFDS, 'train[:10%]' / 'train[:100]' take the first 10% / 100 examples.
  """
  match = re.fullmatch(r'(\w+)(?:\[:(\d+)(%?)\])?', split)
  if not match or match.group(1) not in SPLITS:
    raise ConfigError(f'split: the digits dataset has splits '
                      f'{", ".join(SPLITS)} (optionally sliced as '
                      f'train[:10%] or train[:100]), got {split!r}')
  images, labels, is_test = _load()
  keep = is_test if match.group(1) == 'test' else ~is_test
  images, labels = images[keep], labels[keep]
  if match.group(2):
    count = int(match.group(2))
    if match.group(3) and count > 100:
      raise ConfigError(f'split {split!r}: a percentage is at most 100%, '
                        f'got {count}%')
    if match.group(3):
      # Like TFDS, percent boundaries round to the nearest example.
      count = int(round(len(labels) * min(count, 100) / 100))
    images, labels = images[:count], labels[:count]
  # Boolean indexing made fresh arrays: callers may modify them without
  # touching the cache.
  return {'image': images, 'label': labels}


def write_image_folder(root: str) -> int:
  """Writes the digits as an ImageNet-style image folder,
  `root/<split>/<digit>/<index>.png` (8x8 greyscale PNGs): the offline
  stand-in for a user's own images. Returns the number of files written."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  count = 0
  for split in SPLITS:
    arrays = load_digits_split(split)
    for index, (image, label) in enumerate(zip(arrays['image'],
                                               arrays['label'])):
      directory = os.path.join(root, split, str(label))
      os.makedirs(directory, exist_ok=True)
      Image.fromarray(image[..., 0], mode='L').save(
          os.path.join(directory, f'{index:04d}.png'))
      count += 1
  return count


def _write_folder(flags, args):
  """`python -m contrastive_jax.data.digits DIR`: the digits as PNG files
  under DIR."""
  del flags
  from contrastive_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if len(args) != 1:
    raise UserError('usage: python -m contrastive_jax.data.digits DIR')
  try:
    count = write_image_folder(args[0])
  except OSError as e:
    raise UserError(f'cannot write {args[0]}: {e.strerror or e}') from e
  print(f'wrote {count} PNGs under {args[0]}')


TOOL = cli.Tool(usage='python -m contrastive_jax.data.digits DIR',
                define=lambda fv, argv: None, body=_write_folder,
                positional=True)
run, main = cli.entry_points(TOOL)


if __name__ == '__main__':
  main()
