"""What the augmentation does to real images: a grid, one row per image, the
original first and then several groups of views (view 1, view 2, any
`extra_views` such as multi-crop's small ones, view 1, ...).

  python -m contrastive_jax.preview --config=configs/simclr.py:digits \
      --out=views.png [--num_images=4] [--num_pairs=3]

The same grid goes to TensorBoard at the start of training (see
`write_summary`). Views are drawn exactly as the pipeline draws them: the
config's `view_augment` / `view_augment_2` / `extra_views` on `train_split`, from keys
derived from `seed`.
"""

import ast
import math
import os

# Before TensorFlow loads: keep its C++ start-up chatter out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from contrastive_jax import cli  # noqa: E402
from contrastive_jax.data import (augment, pipeline, sources,  # noqa: E402
                                  view_spec)

# Pixels between tiles. Tiles are enlarged (nearest neighbour) to at least
# MIN_TILE pixels: 16-px digit views are unreadable at their own size.
GAP = 2
MIN_TILE = 64
SUMMARY_KEY = "augmentation_preview"


def tile_side(image_size: int) -> int:
  """The side of one tile in the grid, for views of `image_size` pixels."""
  return image_size * max(1, math.ceil(MIN_TILE / image_size))


def tile(grid: np.ndarray, row: int, col: int, side: int) -> np.ndarray:
  """The tile at (row, col) of a grid whose tiles are `side` pixels."""
  top, left = GAP + row * (side + GAP), GAP + col * (side + GAP)
  return grid[top:top + side, left:left + side]


def _fit(image: np.ndarray, size: int) -> np.ndarray:
  """A size x size version of `image`, aspect ratio kept (padded black):
  originals come in any shape, views already have the configured size."""
  if image.shape[:2] == (size, size):
    return image
  return tf.image.resize_with_pad(image, size, size, method="bicubic").numpy()


def _enlarge(image: np.ndarray, side: int) -> np.ndarray:
  factor = side // image.shape[0]
  return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def view_rows(config, *, num_images: int, num_pairs: int,
              source=None) -> list:
  """Rows of float32 [0, 1] images of config.image_size: the original, then
  num_pairs (view 1, view 2) pairs. `source` (default: the config's
  train_split) gives the images."""
  # Both views and any extra ones (multi-crop's small views, each fitted
  # to the tile; the config checks allow them only for methods that take
  # them).
  views = [augment.build_view(spec, field) for field, spec in
           view_spec.training_views(config, 2, extra_views=True)]
  if source is None:
    source = sources.from_config(config, config.train_split)
  ds = source.sequential(limit=num_images)
  # Keys from (seed, image, pair) only, so a config always previews alike.
  base_key = tf.constant([config.seed, 1], tf.int64)
  rows = []
  # Through the pipeline's iterator: a damaged record is one DataError line.
  for i, example in enumerate(pipeline.as_numpy_iterator(ds)):
    image = tf.image.convert_image_dtype(example["image"], tf.float32)
    row = [_fit(image.numpy(), config.image_size)]
    image_key = tf.random.experimental.stateless_fold_in(base_key, i)
    for j in range(num_pairs):
      pair_key = tf.random.experimental.stateless_fold_in(image_key, j)
      keys = tf.unstack(tf.random.experimental.stateless_split(pair_key, 2))
      keys += [tf.random.experimental.stateless_fold_in(pair_key, v)
               for v in range(2, len(views))]
      for view, key in zip(views, keys):
        row.append(_fit(view(image, key).numpy(), config.image_size))
    rows.append(row)
  return rows


def make_grid(rows: list, side: int) -> np.ndarray:
  """uint8 [H, W, 3]: the rows' images enlarged to `side` pixels, on grey."""
  num_cols = max(len(row) for row in rows)
  grid = np.full((GAP + len(rows) * (side + GAP),
                  GAP + num_cols * (side + GAP), 3), 128, np.uint8)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
      tile(grid, r, c, side)[...] = _enlarge(pixels, side)
  return grid


def preview_grid(config, *, num_images: int = 4, num_pairs: int = 3,
                 source=None) -> np.ndarray:
  """The preview of `config` as one uint8 [H, W, 3] image."""
  rows = view_rows(config, num_images=num_images, num_pairs=num_pairs,
                   source=source)
  return make_grid(rows, tile_side(config.image_size))


def write_summary(config, writer, *, num_pairs: int = 3, source=None):
  """The preview as a TensorBoard image at step 0 (config.preview_images
  rows; 0 turns it off). Only process 0's writer writes files."""
  if config.get("preview_images", 0) <= 0:
    return
  grid = preview_grid(config, num_images=config.preview_images,
                      num_pairs=num_pairs, source=source)
  writer.write_images(0, {SUMMARY_KEY: grid[None]})


# --- Command line ------------------------------------------------------------
# Flags are defined only when run as a program: the training process imports
# this module and has its own --config.

_fail = cli.fail


def _one_line(error: BaseException) -> str:
  text = str(error)
  if isinstance(error, AttributeError) and text.startswith("'"):
    # ConfigDict's answer to an unknown field: the repr of "'name'\nhint".
    field, _, hint = ast.literal_eval(text).partition("\n")
    return f"--config: no such field {field}. {hint}".strip()
  # Config-file errors carry the file's traceback; its last line says it.
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return lines[-1] if lines else type(error).__name__


def _cli():
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import UserError  # pylint: disable=g-import-not-at-top

  config_flag = config_flags.DEFINE_config_file(
      "config", None, "Config file (with an optional :variant).",
      lock_config=True)
  out = flags.DEFINE_string("out", None, "PNG file to write.")
  num_images = flags.DEFINE_integer("num_images", 4,
                                    "Rows: images from train_split.")
  num_pairs = flags.DEFINE_integer("num_pairs", 3, "View pairs per image.")
  flags.mark_flags_as_required(["config", "out"])

  def parse(argv):
    try:
      rest = flags.FLAGS(argv)
      config_flag.value.to_dict()  # Loads the file, applies overrides.
      return rest
    except Exception as e:  # pylint: disable=broad-except
      # A missing or broken config file, an unknown field, a bad value.
      _fail(_one_line(e))

  def run(argv):
    if len(argv) > 1:
      _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if num_images.value < 1 or num_pairs.value < 1:
      _fail("--num_images and --num_pairs must be >= 1")
    try:
      grid = preview_grid(config_flag.value, num_images=num_images.value,
                          num_pairs=num_pairs.value)
      Image.fromarray(grid).save(out.value, format="PNG")
    except UserError as e:
      _fail(str(e))
    except OSError as e:
      _fail(f"cannot write {out.value}: {e.strerror or e}")
    print(f"wrote {out.value}: {num_images.value} images x "
          f"{num_pairs.value} view pairs, {grid.shape[1]}x{grid.shape[0]} px")

  app.run(run, flags_parser=parse)


if __name__ == "__main__":
  _cli()
