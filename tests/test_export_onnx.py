"""`export --format=onnx`: onnxruntime runs the exported file and gives the
JAX encoder's features (`load_encoder`), for a ResNet with the ImageNet stem
(its max-pool is the one primitive the export rewrites) and input
normalisation inside, and for a ViT; any batch size; the metadata; and the
bad-input rows (a missing package, --include_head)."""

import sys

import numpy as np
import onnx
import onnxruntime
import pytest

import contrastive_jax
from contrastive_jax import export, models
from contrastive_jax.errors import UserError
from tests.test_export import (digit_images, digits_config, random_variables,
                               save_checkpoint)


def tiny_checkpoint(tmp_path_factory, model, **overrides):
  c = digits_config()
  c.model, c.width_multiplier = model, 1
  c.update(overrides)
  module = models.encoder_from_config(c, bn_axis_name=None)
  variables = {"batch_stats": {}, **random_variables(module, c.image_size)}
  return save_checkpoint(tmp_path_factory.mktemp(model), c, variables)


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory):
  """tiny_resnet with the 7x7 stem and 3x3/2 max-pool, ImageNet mean/std
  inside, at 32 px."""
  return tiny_checkpoint(tmp_path_factory, "tiny_resnet", cifar_stem=False,
                         input_norm="imagenet", image_size=32,
                         eval_augment="resize(32)")


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
  return tiny_checkpoint(tmp_path_factory, "tiny_vit", cifar_stem=False)


def run_onnx(path, images):
  session = onnxruntime.InferenceSession(
      path, providers=["CPUExecutionProvider"])
  (features,) = session.run(["features"], {"images": images})
  return features


@pytest.mark.parametrize("run", ["resnet_checkpoint", "vit_checkpoint"])
def test_onnxruntime_features_equal_the_jax_encoder(run, request, tmp_path):
  workdir = request.getfixturevalue(run)
  out = str(tmp_path / "encoder.onnx")
  summary = export.export(workdir, fmt="onnx", out=out)
  assert "ONNX model (opset 18" in summary
  encoder = contrastive_jax.load_encoder(workdir)
  model = onnx.load(out)
  onnx.checker.check_model(model)
  (images,) = model.graph.input
  dims = [d.dim_param or d.dim_value for d in
          images.type.tensor_type.shape.dim]
  assert images.name == "images" and dims[1:] == [encoder.image_size] * 2 + [3]
  assert isinstance(dims[0], str)  # any batch size
  meta = {p.key: p.value for p in model.metadata_props}
  assert meta["format"] == "onnx" and meta["model"] == encoder.config.model
  assert meta["feature_dim"] == str(encoder.feature_dim)
  assert meta["step"] == str(encoder.step)
  for batch in (1, 5):
    x = digit_images(encoder.image_size)[:batch]
    want = encoder(x)
    got = run_onnx(out, x)
    assert got.shape == (batch, encoder.feature_dim)
    assert np.abs(want).max() > 1e-2  # not a trivially zero network
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_onnx_metadata_says_the_model_normalises(resnet_checkpoint, tmp_path):
  out = str(tmp_path / "encoder.onnx")
  export.export(resnet_checkpoint, fmt="onnx", out=out)
  meta = {p.key: p.value for p in onnx.load(out).metadata_props}
  assert meta["input_norm"] == "imagenet"
  assert "the ONNX model subtracts mean" in meta["input"]


def test_missing_package_is_one_line_naming_the_pip_command(
    resnet_checkpoint, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import fails
  with pytest.raises(UserError, match=r"^--format=onnx needs the package "
                     r"jax2onnx, which is not installed: pip install -e "
                     r"'\.\[onnx\]'$"):
    export.export(resnet_checkpoint, fmt="onnx",
                  out=str(tmp_path / "x.onnx"))
  assert not list(tmp_path.iterdir())


def test_include_head_with_onnx_is_a_user_error(vit_checkpoint, tmp_path):
  with pytest.raises(UserError, match="--format=onnx exports the encoder "
                     "only"):
    export.export(vit_checkpoint, fmt="onnx", out=str(tmp_path / "x.onnx"),
                  include_head=True)
  assert not list(tmp_path.iterdir())
