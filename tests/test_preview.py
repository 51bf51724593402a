"""The augmentation preview: the command's PNG, and the same grid as a
TensorBoard image when training starts; the profiler window's trace."""

import contextlib
import glob
import io
import os

import jax
import numpy as np
import tensorflow as tf
from PIL import Image

from contrastive_jax import preview, train
from tests.test_train import photos_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_preview(*args):
  """`python -m contrastive_jax.preview ARGS`, in process: (exit status,
  stderr)."""
  stderr = io.StringIO()
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    with contextlib.redirect_stderr(stderr):
      status = preview.run(["preview", *args])
  finally:
    os.chdir(cwd)
  return status, stderr.getvalue()


def test_preview_command_writes_views_that_differ(tmp_path):
  out = tmp_path / "views.png"
  status, stderr = run_preview("--config=configs/simclr.py:digits",
                               f"--out={out}", "--num_images=3",
                               "--num_pairs=2")
  assert status == 0, stderr[-2000:]
  grid = np.asarray(Image.open(out).convert("RGB")).astype(np.float32) / 255
  side = preview.tile_side(16)  # the digits views are 16 px
  assert grid.shape == (preview.GAP + 3 * (side + preview.GAP),
                        preview.GAP + 5 * (side + preview.GAP), 3)
  # A view CAN equal its original (a whole-image crop with no flip, jitter or
  # grayscale: ~1% per view on 8 px digits), so the test asks for most.
  differ_from_original, differ_from_each_other = [], []
  for row in range(3):
    original, *views = [preview.tile(grid, row, col, side)
                        for col in range(5)]
    assert original.std() > 0.1  # a digit, not a blank tile
    for i, view in enumerate(views):
      differ_from_original.append(np.abs(view - original).mean() > 0.02)
      for other in views[i + 1:]:
        differ_from_each_other.append(np.abs(view - other).mean() > 0.02)
  assert sum(differ_from_original) >= 10, differ_from_original  # of 12
  assert sum(differ_from_each_other) >= 16, differ_from_each_other  # of 18


def test_preview_command_bad_input_is_one_line(tmp_path):
  status, stderr = run_preview(
      "--config=configs/simclr.py:digits", f"--out={tmp_path}/x.png",
      "--config.view_augment=blurr(3)")
  assert status == 2
  assert stderr.strip().splitlines()[-1].startswith(
      "error: view_augment: unknown op 'blurr'")
  assert not os.path.exists(tmp_path / "x.png")
  status, stderr = run_preview("--config=configs/simclr.py:digits",
                               f"--out={tmp_path}/x.png", "--num_pairs=0")
  assert (status, stderr.strip()) == (
      2, "error: --num_images and --num_pairs must be >= 1")


def test_preview_help_exits_0(capsys):
  assert preview.run(["preview", "--help"]) == 0
  assert capsys.readouterr().out.startswith(
      "usage: python -m contrastive_jax.preview")


def image_summaries(workdir):
  """{tag: [image shape]} of the image summaries in workdir's event files."""
  found = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "images":
          # [width, height, encoded image...] as strings.
          encoded = tf.make_ndarray(value.tensor)[2]
          found[value.tag] = tf.io.decode_png(encoded).shape
  return found


def test_training_writes_preview_summary_and_profile_trace(tmp_path,
                                                          prepared_tfds):
  # A real prepared ArrayRecord dataset: the preview used to read it through
  # builder.as_dataset, which ArrayRecord does not implement.
  workdir = str(tmp_path)
  config = photos_config(num_steps=4, data_dir=prepared_tfds[0])
  config.preview_images = 2
  config.profile_steps = 2
  config.profile_start_step = 1
  config.knn.every_steps = 0
  train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  side = preview.tile_side(16)
  assert image_summaries(workdir)[preview.SUMMARY_KEY] == (
      preview.GAP + 2 * (side + preview.GAP),
      preview.GAP + 7 * (side + preview.GAP), 3)
  traces = glob.glob(os.path.join(workdir, "plugins", "profile", "*",
                                  "*.xplane.pb"))
  assert traces and os.path.getsize(traces[0]) > 0
