"""A ViT encoder (no BatchNorm statistics) through everything downstream of
pretraining: the kNN monitor and online probe, load_encoder, linear
evaluation (frozen), finetuning and export."""

import json
import os

import jax
import numpy as np
import pytest

import contrastive_jax
from contrastive_jax import export, train
from contrastive_jax.errors import UserError
from tests.test_evaluation import digits_images, tiny_eval_config
from tests.test_simclr_step import tiny_config

VIT = dict(model="tiny_vit", patch_size=8, cifar_stem=False,
           width_multiplier=1)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
  """A 2-step SimCLR digits run at 8 px with the tiny ViT."""
  workdir = str(tmp_path_factory.mktemp("vit_pretrain"))
  c = tiny_config()
  c.update(VIT)
  c.num_train_steps, c.log_every_steps, c.checkpoint_every_steps = 2, 1, 1
  c.knn.every_steps, c.knn.k = 2, 5
  c.eval_augment, c.eval_batch_size = "resize(8)", 64
  c.async_checkpointing = False
  state = train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  return workdir, jax.device_get(state)


def test_pretraining_monitors_and_load_encoder(vit_run):
  workdir, state = vit_run
  assert "encoder" not in state.batch_stats  # no BatchNorm in a ViT
  rows = [json.loads(l) for l in open(os.path.join(workdir,
                                                   "metrics.jsonl"))]
  assert any("knn_accuracy" in r for r in rows)
  assert all(np.isfinite(r["probe_loss"]) for r in rows if "probe_loss" in r)
  encoder = contrastive_jax.load_encoder(workdir)
  h = encoder(digits_images(5))
  assert h.shape == (5, 32) and encoder.feature_dim == 32
  assert np.all(np.isfinite(h))


@pytest.mark.parametrize("method", ["linear_eval", "finetune"])
def test_linear_eval_and_finetune(vit_run, tmp_path, method):
  pretrained_dir, pretrained_state = vit_run
  c = tiny_eval_config(method, pretrained_dir)
  c.update(VIT)
  state = jax.device_get(train.train_and_evaluate(
      c, str(tmp_path), devices=jax.devices()[:2]))
  result = json.load(open(tmp_path / "eval_results.json"))
  assert 0 <= result["top1"] <= 1 and result["num_examples"] > 0
  trained = (state.params["encoder"] if method == "finetune"
             else state.extra["encoder"]["params"])
  same = [np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(trained),
      jax.tree.leaves(pretrained_state.params["encoder"]))]
  # Linear evaluation leaves the encoder as pretrained; finetuning moves it.
  assert all(same) if method == "linear_eval" else not all(same)


def test_export(vit_run, tmp_path):
  workdir, _ = vit_run
  out = str(tmp_path / "vit.npz")
  assert "tiny_vit encoder of step 2" in export.export(
      workdir, fmt="npz", out=out)
  arrays = np.load(out)
  assert any("patch_embed" in k for k in arrays.files)
  with pytest.raises(UserError, match="supports ResNet encoders"):
    export.export(workdir, fmt="torchvision",
                  out=str(tmp_path / "vit.safetensors"))
