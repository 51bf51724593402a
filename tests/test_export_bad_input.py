"""`python -m contrastive_jax.export`'s bad-input rows: each is one
UserError line (exit status 2 on the command line) and writes nothing, an
earlier export kept (the formats themselves: tests/test_export.py)."""

import os
import subprocess
import sys

import pytest

from contrastive_jax import export, models
from contrastive_jax.errors import CheckpointError, UserError
# The real run (a fixture, used by name) and the checkpoint helpers.
from tests.test_export import (digits_config, digits_run,  # noqa: F401  pylint: disable=unused-import
                               random_variables, save_checkpoint)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
  """A (tiny) ViT pretraining checkpoint: its arrays are the ones its
  stored config builds."""
  c = digits_config()
  c.model, c.width_multiplier, c.cifar_stem = "tiny_vit", 1, False
  module = models.encoder_from_config(c, bn_axis_name=None)
  variables = {"batch_stats": {},  # a ViT has none
               **random_variables(module, c.image_size)}
  return save_checkpoint(tmp_path_factory.mktemp("vit"), c, variables)


BAD_INPUT = [
    # (checkpoint, format, out, expected error)
    ("{tmp}/missing", "torchvision", "{tmp}/x.safetensors",
     "pretrained checkpoint path .*/missing does not exist"),
    ("{tmp}", "torchvision", "{tmp}/x.safetensors", "no checkpoint in"),
    ("{vit}", "torchvision", "{tmp}/x.safetensors",
     "export --format=torchvision supports ResNet encoders; this "
     "checkpoint's model is 'tiny_vit'"),
    ("{run}", "torchvision", "{tmp}/no_dir/x.safetensors",
     "directory .*/no_dir does not exist"),
    ("{run}", "tflite", "{tmp}/x.tflite",
     "--format='tflite' is not a known format"),
    ("{run}", "torchvision", "{tmp}", "is a directory; give a file name"),
    ("{run}", "saved_model", "{tmp}/precious",
     "exists; a SavedModel goes into a new directory"),
]


@pytest.mark.parametrize("checkpoint,fmt,out,match", BAD_INPUT)
def test_bad_input_raises_one_user_error_and_writes_nothing(
    checkpoint, fmt, out, match, digits_run, vit_checkpoint, tmp_path):
  precious = tmp_path / "precious"
  precious.write_bytes(b"an earlier export")
  fill = dict(tmp=tmp_path, run=digits_run, vit=vit_checkpoint)
  with pytest.raises(UserError, match=match) as error:
    export.export(checkpoint.format(**fill), fmt=fmt, out=out.format(**fill))
  assert "\n" not in str(error.value)
  assert sorted(os.listdir(tmp_path)) == ["precious"]
  assert precious.read_bytes() == b"an earlier export"


@pytest.mark.parametrize("fmt,match", [
    ("npz", "has no projection head to export"),
    ("saved_model", "--format=saved_model exports the encoder only"),
])
def test_include_head_without_a_head_is_a_user_error(fmt, match,
                                                     vit_checkpoint,
                                                     tmp_path):
  with pytest.raises(UserError, match=match):
    export.export(vit_checkpoint, fmt=fmt, out=str(tmp_path / "x"),
                  include_head=True)
  assert not os.listdir(tmp_path)


def test_failed_export_keeps_the_previous_file(vit_checkpoint, tmp_path):
  out = tmp_path / "encoder.safetensors"
  out.write_bytes(b"an earlier export")
  with pytest.raises(CheckpointError, match="supports ResNet encoders"):
    export.export(vit_checkpoint, fmt="torchvision", out=str(out))
  assert out.read_bytes() == b"an earlier export"
  assert os.listdir(tmp_path) == ["encoder.safetensors"]


def test_command_line_error_is_one_line_and_exit_code_2(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "contrastive_jax.export",
       f"--checkpoint={tmp_path}/missing", f"--out={tmp_path}/x.safetensors"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: pretrained checkpoint path {tmp_path}/missing does not exist"]
  assert not os.listdir(tmp_path)
