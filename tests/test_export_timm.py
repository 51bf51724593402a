"""`export --format=timm`: a ViT encoder as a safetensors state dict in
timm's `VisionTransformer` names and layouts, checked by a NumPy forward
pass of timm's ViT written here (pre-LN blocks, fused qkv in timm's
[3, heads, head_dim] order, exact GELU, LayerNorm eps 1e-6, the normed cls
token) against the JAX encoder's features."""

import json
import re

import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy import special

import contrastive_jax
from contrastive_jax import export, timm_layout
from contrastive_jax import models
from contrastive_jax.errors import UserError
from tests.test_export import (digits_config, random_variables,
                               save_checkpoint)


def _checkpoint(directory, **fields):
  """A pretraining checkpoint of the digits config with `fields`, its
  encoder's variables all random."""
  c = digits_config()
  c.update(fields)
  module = models.encoder_from_config(c, bn_axis_name=None)
  return save_checkpoint(directory, c, {"batch_stats": {},
                                        **random_variables(module,
                                                           c.image_size)})


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
  """tiny_vit (32 wide, 2 blocks, 4 heads) at 32 px in patches of 8: a
  4x4 grid, so the patches' order and the position table count."""
  return _checkpoint(tmp_path_factory.mktemp("vit"), model="tiny_vit",
                     width_multiplier=1, cifar_stem=False, patch_size=8,
                     image_size=32, eval_augment="resize(32)")


def _layer_norm(x, weight, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * weight + bias


def timm_vit_features(sd, images, *, num_heads):
  """timm's VisionTransformer.forward_features + token pooling, float64,
  on NHWC images in [0, 1] (no input normalisation: the test's encoder
  has none)."""
  x = np.transpose(np.asarray(images, np.float64), (0, 3, 1, 2))  # NCHW
  w = sd["patch_embed.proj.weight"].astype(np.float64)  # [D, 3, p, p]
  d, _, p, _ = w.shape
  b, _, s, _ = x.shape
  g = s // p
  patches = x.reshape(b, 3, g, p, g, p).transpose(0, 2, 4, 1, 3, 5)
  tokens = (patches.reshape(b, g * g, 3 * p * p) @ w.reshape(d, -1).T
            + sd["patch_embed.proj.bias"])
  cls = np.broadcast_to(sd["cls_token"], (b, 1, d))
  x = np.concatenate([cls, tokens], axis=1) + sd["pos_embed"]
  depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
  hd = d // num_heads
  for i in range(depth):
    k = f"blocks.{i}."
    y = _layer_norm(x, sd[k + "norm1.weight"], sd[k + "norm1.bias"])
    qkv = y @ sd[k + "attn.qkv.weight"].T + sd[k + "attn.qkv.bias"]
    qkv = qkv.reshape(b, -1, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)
    q, kk, v = qkv[0], qkv[1], qkv[2]
    logits = q @ kk.transpose(0, 1, 3, 2) / np.sqrt(hd)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    y = (attn @ v).transpose(0, 2, 1, 3).reshape(b, -1, d)
    x = x + y @ sd[k + "attn.proj.weight"].T + sd[k + "attn.proj.bias"]
    y = _layer_norm(x, sd[k + "norm2.weight"], sd[k + "norm2.bias"])
    y = y @ sd[k + "mlp.fc1.weight"].T + sd[k + "mlp.fc1.bias"]
    y = 0.5 * y * (1 + special.erf(y / np.sqrt(2)))
    x = x + y @ sd[k + "mlp.fc2.weight"].T + sd[k + "mlp.fc2.bias"]
  x = _layer_norm(x, sd["norm.weight"], sd["norm.bias"])
  return x[:, 0]


def timm_keys(depth):
  """Every key of timm's VisionTransformer(num_classes=0) state dict."""
  keys = {"cls_token", "pos_embed", "patch_embed.proj.weight",
          "patch_embed.proj.bias", "norm.weight", "norm.bias"}
  for i in range(depth):
    for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                 "mlp.fc2"):
      keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
  return keys


def test_timm_state_dict_computes_the_jax_features(vit_checkpoint, tmp_path):
  out = tmp_path / "vit.safetensors"
  line = export.export(vit_checkpoint, fmt="timm", out=str(out))
  assert "timm's layout" in line
  sd = load_file(str(out))
  encoder = contrastive_jax.load_encoder(vit_checkpoint)
  _, depth, patch = timm_layout.shape_of(encoder.variables)
  assert set(sd) == timm_keys(depth)
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(str(out), "np") as f:
    meta = f.metadata()
  call = meta["timm_create"]
  # tiny_vit: 32 wide, 2 blocks, 4 heads, at the checkpoint's size.
  assert call == (
      "timm.create_model('vit_small_patch16_224', num_classes=0, "
      "img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)")
  assert sd["pos_embed"].shape == (1, 1 + 4 * 4, 32)
  heads = int(re.search(r"num_heads=(\d+)", call)[1])
  images = np.random.default_rng(0).uniform(
      size=(3, encoder.image_size, encoder.image_size, 3)).astype(np.float32)
  np.testing.assert_allclose(timm_vit_features(sd, images, num_heads=heads),
                             encoder(images), rtol=1e-4, atol=1e-4)
  assert json.loads(meta["cifar_stem"]) is False and meta["format"] == "timm"


def test_dinos_learned_positions_are_timms_pos_embed(tmp_path):
  """DINO's ViT (learned positions, its init): the table is timm's
  `pos_embed` as it is, and the NumPy forward at the checkpoint's size
  agrees; at another size (16 px: a 2x2 grid) the JAX encoder agrees
  with the NumPy forward on the table resized by the test's own
  transcription of DINO's bicubic (tests/test_vit_dino.py)."""
  from tests.test_vit_dino import dino_interpolate  # pylint: disable=g-import-not-at-top
  checkpoint = _checkpoint(
      tmp_path / "dino", model="tiny_vit", width_multiplier=1,
      cifar_stem=False, patch_size=8, image_size=32,
      eval_augment="resize(32)", vit_position_embedding="learned",
      vit_init="dino", vit_num_heads=2)
  out = tmp_path / "vit.safetensors"
  export.export(checkpoint, fmt="timm", out=str(out))
  sd = load_file(str(out))
  encoder = contrastive_jax.load_encoder(checkpoint)
  table = np.asarray(encoder.variables["params"]["pos_embed"])
  assert table.shape == (1, 1 + 4 * 4, 32)
  np.testing.assert_array_equal(sd["pos_embed"], table)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(timm_vit_features(sd, images, num_heads=2),
                             encoder(images), rtol=1e-4, atol=1e-4)
  small = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
  jax_h = encoder.module.apply(encoder.variables, small, train=False)
  resized = {**sd, "pos_embed": dino_interpolate(table, 2, 2)}
  np.testing.assert_allclose(timm_vit_features(resized, small, num_heads=2),
                             jax_h, rtol=1e-4, atol=1e-4)


def test_the_create_call_names_timms_model_and_only_what_differs():
  assert timm_layout.create_call(
      width=384, depth=12, num_heads=6, patch_size=16, image_size=224) == (
          "timm.create_model('vit_small_patch16_224', num_classes=0)")
  # MoCo v3's ViT-S: 12 heads where timm's has 6.
  assert timm_layout.create_call(
      width=384, depth=12, num_heads=12, patch_size=16, image_size=224) == (
          "timm.create_model('vit_small_patch16_224', num_classes=0, "
          "num_heads=12)")
  assert timm_layout.create_call(
      width=768, depth=12, num_heads=12, patch_size=16, image_size=224) == (
          "timm.create_model('vit_base_patch16_224', num_classes=0)")


def test_a_resnet_or_a_head_is_one_line(vit_checkpoint, tmp_path):
  resnet = _checkpoint(tmp_path / "resnet")
  out = tmp_path / "out"
  out.mkdir()
  with pytest.raises(UserError, match="--format=timm writes ViT encoders"):
    export.export(resnet, fmt="timm", out=str(out / "x"))
  with pytest.raises(UserError, match="exports the encoder only"):
    export.export(vit_checkpoint, fmt="timm", out=str(out / "x"),
                  include_head=True)
  assert not list(out.iterdir())
