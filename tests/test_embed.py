"""`python -m contrastive_jax.embed`: the embeddings of a split equal the
encoder API's on the same eval-view images, in paths.txt's order, and a rerun
computes only the chunks that are missing."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

import contrastive_jax
from contrastive_jax import embed, models
from contrastive_jax.data import augment, digits
from contrastive_jax.errors import ConfigError, UserError
from tests.test_export import digits_config, random_variables, save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 100  # digits 'test' has 359 examples: chunks of 100, 100, 100, 59


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """The digits config's encoder (tiny ResNet x2, 16 px, eval view
  resize(16)) with random variables, saved as a pretraining checkpoint."""
  c = digits_config()
  module = models.create_encoder(c.model, width_multiplier=c.width_multiplier,
                                 cifar_stem=c.cifar_stem)
  return save_checkpoint(tmp_path_factory.mktemp("digits"), c,
                         random_variables(module, c.image_size))


@pytest.fixture(scope="module")
def embedded(checkpoint, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("embedded") / "out")
  result = embed.embed(checkpoint, images="digits", split="test", out=out,
                       batch_size=20, chunk_size=CHUNK)
  return out, result


def eval_view_images(spec):
  """The test split through `spec` with the eval pipeline's fixed key."""
  view = augment.build_view(spec)
  images = digits.load_digits_split("test")["image"]
  return np.stack([
      view(tf.image.convert_image_dtype(image, tf.float32),
           tf.zeros([2], tf.int64)).numpy() for image in images])


def test_embeddings_equal_the_encoder_api_in_paths_order(checkpoint,
                                                         embedded):
  out, result = embedded
  assert result == {"num_examples": 359, "feature_dim": 32, "chunks": 4,
                    "computed": [0, 1, 2, 3]}
  embeddings = np.load(os.path.join(out, "embeddings.npy"))
  with open(os.path.join(out, "paths.txt"), encoding="utf-8") as f:
    paths = f.read().splitlines()
  assert paths == [f"test[{i}]" for i in range(359)]
  encoder = contrastive_jax.load_encoder(checkpoint)
  want = encoder(eval_view_images(encoder.config.eval_augment))
  assert embeddings.dtype == np.float32 and embeddings.shape == (359, 32)
  np.testing.assert_allclose(embeddings, want, rtol=1e-5, atol=1e-5)
  assert sorted(os.listdir(os.path.join(out, "parts"))) == [
      "00000.json", "00000.npy", "00001.json", "00001.npy", "00002.json",
      "00002.npy", "00003.json", "00003.npy", "assembled.json",
      "manifest.json"]


def test_the_pixels_baseline_embeds_the_images_themselves(tmp_path):
  out = str(tmp_path / "pixels")
  result = embed.embed("pixels", images="digits", split="test", out=out,
                       image_size=12, batch_size=64)
  assert result["feature_dim"] == 12 * 12 * 3
  embeddings = np.load(os.path.join(out, "embeddings.npy"))
  want = eval_view_images("resize(12)").reshape(359, -1)
  np.testing.assert_array_equal(embeddings, want)


def _mtimes(out):
  parts = os.path.join(out, "parts")
  return {name: os.stat(os.path.join(parts, name)).st_mtime_ns
          for name in os.listdir(parts) if name.endswith(".npy")}


def test_rerun_recomputes_only_a_deleted_chunk(checkpoint, embedded):
  out, _ = embedded
  before = np.load(os.path.join(out, "embeddings.npy"))
  mtimes = _mtimes(out)
  os.remove(os.path.join(out, "parts", "00002.npy"))
  result = embed.embed(checkpoint, images="digits", split="test", out=out,
                       batch_size=20, chunk_size=CHUNK)
  assert result["computed"] == [2]
  after = _mtimes(out)
  assert {k: after[k] for k in after if k != "00002.npy"} == {
      k: mtimes[k] for k in mtimes if k != "00002.npy"}
  np.testing.assert_array_equal(
      np.load(os.path.join(out, "embeddings.npy")), before)

  # Everything done: nothing computed, nothing rewritten.
  stamp = os.stat(os.path.join(out, "embeddings.npy")).st_mtime_ns
  result = embed.embed(checkpoint, images="digits", split="test", out=out,
                       batch_size=20, chunk_size=CHUNK)
  assert result["computed"] == []
  assert os.stat(os.path.join(out, "embeddings.npy")).st_mtime_ns == stamp


def test_parts_of_another_run_are_recomputed_and_other_files_kept(
    checkpoint, tmp_path):
  run = lambda chunk_size: embed.embed(
      checkpoint, images="digits", split="test[:50]", out=str(tmp_path),
      batch_size=24, chunk_size=chunk_size)["computed"]
  assert run(20) == [0, 1, 2]
  (tmp_path / "parts" / "notes.txt").write_text("mine")
  assert run(30) == [0, 1]
  assert sorted(os.listdir(tmp_path / "parts")) == [
      "00000.json", "00000.npy", "00001.json", "00001.npy", "assembled.json",
      "manifest.json", "notes.txt"]


def test_a_retrained_workdir_at_the_same_path_and_step_is_recomputed(
    tmp_path, caplog):
  """Train, embed, delete the workdir, train again at the same path (same
  step, another seed), embed into the same --out: every part is computed
  again from the new model, and the run says why."""
  c = digits_config()
  module = models.create_encoder(c.model, width_multiplier=c.width_multiplier,
                                 cifar_stem=c.cifar_stem)
  workdir, out = tmp_path / "run", str(tmp_path / "out")
  save_checkpoint(workdir, c, random_variables(module, c.image_size, seed=1))
  run = lambda: embed.embed(str(workdir), images="digits", split="test[:40]",
                            out=out, batch_size=20, chunk_size=20)
  assert run()["computed"] == [0, 1]
  first = np.load(os.path.join(out, "embeddings.npy"))
  shutil.rmtree(workdir)
  save_checkpoint(workdir, c, random_variables(module, c.image_size, seed=2))
  with caplog.at_level("WARNING"):
    assert run()["computed"] == [0, 1]
  assert any("another encoder_sha256" in r.getMessage()
             for r in caplog.records)
  second = np.load(os.path.join(out, "embeddings.npy"))
  want = contrastive_jax.load_encoder(str(workdir))(
      eval_view_images("resize(16)")[:40])
  np.testing.assert_allclose(second, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(first, second)


def test_chunks_are_fixed_size_ranges():
  assert embed.chunk_ranges(359, 100) == [(0, 100), (100, 200), (200, 300),
                                          (300, 359)]
  assert embed.chunk_ranges(200, 100) == [(0, 100), (100, 200)]
  assert embed.chunk_ranges(0, 100) == []


def test_an_eval_view_of_another_size_is_a_config_error():
  embed.check_view(augment.build_view("resize(16)"), "resize(16)", 16)
  with pytest.raises(ConfigError, match="eval_augment='flip_lr' gives images "
                     r"of \(21, 19, 3\); the encoder takes \(16, 16, 3\)"):
    embed.check_view(augment.build_view("flip_lr"), "flip_lr", 16)


@pytest.mark.parametrize("kwargs,match", [
    (dict(checkpoint="{tmp}/missing"),
     "pretrained checkpoint path .*/missing does not exist"),
    (dict(images="no_such_dataset"),
     "dataset: 'no_such_dataset' is neither"),
    (dict(split="validation"), "the digits dataset has splits train, test"),
    (dict(out="{tmp}/a_file/out"), "cannot be created: .*/a_file is a file"),
    (dict(out="{tmp}/a_file"), "is a file; give a directory"),
    (dict(batch_size=0), "--batch_size=0 must be a positive integer"),
    (dict(checkpoint="pixels"), "--checkpoint=pixels needs --image_size"),
])
def test_bad_input_raises_one_user_error_and_writes_nothing(
    kwargs, match, checkpoint, tmp_path):
  (tmp_path / "a_file").write_text("precious")
  args = dict(checkpoint=checkpoint, images="digits", split="test",
              out="{tmp}/out")
  args.update(kwargs)
  args = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
          for k, v in args.items()}
  with pytest.raises(UserError, match=match) as error:
    embed.embed(args.pop("checkpoint"), **args)
  assert "\n" not in str(error.value)
  assert os.listdir(tmp_path) == ["a_file"]
  assert (tmp_path / "a_file").read_text() == "precious"


def test_command_line_error_is_one_line_and_exit_code_2(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "contrastive_jax.embed",
       f"--checkpoint={tmp_path}/missing", "--images=digits",
       f"--out={tmp_path}/out"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: pretrained checkpoint path {tmp_path}/missing does not exist"]
  assert not os.listdir(tmp_path)
