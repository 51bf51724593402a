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

import math
import os

# Before TensorFlow loads: keep its C++ start-up chatter out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from contrastive_jax import cli  # noqa: E402
from contrastive_jax.config import lib as config_lib  # noqa: E402
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
  if config_lib.value(config, "preview_images") <= 0:
    return
  grid = preview_grid(config, num_images=config.preview_images,
                      num_pairs=num_pairs, source=source)
  writer.write_images(0, {SUMMARY_KEY: grid[None]})


# --- Command line ------------------------------------------------------------
# Flags are defined only when run as a program (on the tool's own
# FlagValues): the training process imports this module.


def _define(fv, argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  holders = dict(
      config=config_flags.DEFINE_config_file(
          "config", None, "Config file (with an optional :variant).",
          lock_config=True, flag_values=fv, sys_argv=argv),
      out=flags.DEFINE_string("out", None, "PNG file to write.",
                              flag_values=fv),
      num_images=flags.DEFINE_integer(
          "num_images", 4, "Rows: images from train_split.", flag_values=fv),
      num_pairs=flags.DEFINE_integer("num_pairs", 3, "View pairs per image.",
                                     flag_values=fv),
      argv=argv)
  flags.mark_flags_as_required(["config", "out"], flag_values=fv)
  return holders


def _body(f, args):
  del args
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  config = cli.read_config(f["config"], f["argv"])
  num_images, num_pairs, out = (f["num_images"].value, f["num_pairs"].value,
                                f["out"].value)
  if num_images < 1 or num_pairs < 1:
    raise UserError("--num_images and --num_pairs must be >= 1")
  grid = preview_grid(config, num_images=num_images, num_pairs=num_pairs)
  try:
    Image.fromarray(grid).save(out, format="PNG")
  except OSError as e:
    raise UserError(f"cannot write {out}: {e.strerror or e}") from e
  print(f"wrote {out}: {num_images} images x {num_pairs} view pairs, "
        f"{grid.shape[1]}x{grid.shape[0]} px")


TOOL = cli.Tool(
    usage="python -m contrastive_jax.preview --config=CONFIG[:VARIANT] "
    "--out=FILE.png [--num_images=N] [--num_pairs=N]",
    define=_define, body=_body)


run, main = cli.entry_points(TOOL)


if __name__ == "__main__":
  main()
