"""Evaluation: the encoder API, linear evaluation and finetuning, kNN, the
online probe, and the errors a wrong checkpoint gives."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import contrastive_jax
from contrastive_jax import optim, train
from contrastive_jax.config import lib as config_lib
from contrastive_jax.evaluation import knn
from contrastive_jax import pretrained
from contrastive_jax.data import digits
from contrastive_jax.errors import CheckpointError, ConfigError
from contrastive_jax.methods import simclr
from tests.test_simclr_step import (fixed_batch, tiny_config,
                                    unsharded_model_and_state)

def load_config(name, variant):
  return config_lib.load(f"{name}:{variant}")


def tiny_eval_config(method, pretrained_path, num_steps=3):
  c = load_config(method, "digits")
  c.pretrained = pretrained_path
  c.image_size = 8
  c.view_augment = "resize(8)|flip_lr"
  c.eval_augment = "resize(8)"
  c.batch_size = 16
  c.eval_batch_size = 64
  c.num_train_steps = num_steps
  c.async_checkpointing = False
  c.model, c.width_multiplier, c.cifar_stem = "tiny_resnet", 1, True
  return c


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
  """A 2-step SimCLR digits run at 8 px: (workdir, final state)."""
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  c = tiny_config()
  c.num_train_steps = 2
  c.log_every_steps = 1
  c.checkpoint_every_steps = 1
  c.knn.every_steps = 2
  c.knn.k = 5
  c.eval_augment = "resize(8)"
  c.eval_batch_size = 64
  c.async_checkpointing = False
  state = train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  return workdir, jax.device_get(state)


def digits_images(n, size=8):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = digits.load_digits_split("test")["image"][:n]
  return tf.image.resize(images.astype(np.float32) / 255.0,
                         (size, size)).numpy()


def test_restore_then_embed_equals_the_trained_encoder(pretrained_run):
  workdir, state = pretrained_run
  encoder = contrastive_jax.load_encoder(workdir)
  assert encoder.step == 2 and encoder.image_size == 8
  images = digits_images(5)
  config = tiny_config()
  module = pretrained.encoder_module(config)
  # The same compiled computation on the trained state's own variables:
  # equality is bit for bit only if the restored variables are.
  want = jax.jit(lambda v, x: module.apply(v, x, train=False))(
      {"params": state.params["encoder"],
       "batch_stats": state.batch_stats["encoder"]}, images)
  got = encoder(images)
  assert got.shape == (5, encoder.feature_dim)
  np.testing.assert_array_equal(got, np.asarray(want))
  # A step directory names the same checkpoint.
  again = contrastive_jax.load_encoder(os.path.join(workdir, "checkpoints",
                                                    "2"))
  np.testing.assert_array_equal(again(images), got)


def test_knn_monitor_wrote_its_accuracy(pretrained_run):
  workdir, _ = pretrained_run
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  knn_rows = [r for r in rows if "knn_accuracy" in r]
  assert [r["step"] for r in knn_rows] == [2]
  assert 0.0 <= knn_rows[0]["knn_accuracy"] <= 1.0
  probe = [r for r in rows if "probe_accuracy" in r]
  assert probe and all(np.isfinite(r["probe_loss"]) for r in probe)


def test_linear_eval_keeps_the_encoder_frozen(pretrained_run, tmp_path):
  workdir, pre_state = pretrained_run
  config = tiny_eval_config("linear_eval", workdir)
  state = train.train_and_evaluate(config, str(tmp_path),
                                   devices=jax.devices()[:2])
  frozen = jax.device_get(state.extra["encoder"])
  for got, want in zip(jax.tree.leaves(frozen["params"]),
                       jax.tree.leaves(pre_state.params["encoder"])):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(frozen["batch_stats"]),
                       jax.tree.leaves(pre_state.batch_stats["encoder"])):
    np.testing.assert_array_equal(got, want)
  assert set(state.params) == {"linear"}  # all the optimizer ever saw
  results = json.loads((tmp_path / "eval_results.json").read_text())
  assert results["num_examples"] == len(digits.load_digits_split("test")[
      "label"])
  assert results["checkpoint_step"] == 2
  assert 0.0 <= results["top1"] <= results["top5"] <= 1.0


def test_one_run_one_name_whatever_the_spelling(pretrained_run, tmp_path):
  """WORKDIR/ and WORKDIR/checkpoints name the same run: the results say
  WORKDIR, and a rerun with the other spelling continues the finished run
  (it was refused as a changed config)."""
  workdir, _ = pretrained_run
  out = str(tmp_path / "linear")
  train.train_and_evaluate(tiny_eval_config("linear_eval", workdir + "/",
                                            num_steps=1), out,
                           devices=jax.devices()[:1])
  results = json.loads((tmp_path / "linear" / "eval_results.json").read_text())
  assert results["pretrained"] == os.path.normpath(workdir)
  state = train.train_and_evaluate(
      tiny_eval_config("linear_eval", os.path.join(workdir, "checkpoints"),
                       num_steps=1), out, devices=jax.devices()[:1])
  assert int(state.step) == 1


def test_finetune_trains_the_encoder_on_a_label_fraction(pretrained_run,
                                                         tmp_path):
  workdir, pre_state = pretrained_run
  config = tiny_eval_config("finetune", workdir, num_steps=2)
  config.train_split = "train[:10%]"
  state = train.train_and_evaluate(config, str(tmp_path),
                                   devices=jax.devices()[:2])
  moved = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(jax.device_get(state.params["encoder"])),
      jax.tree.leaves(pre_state.params["encoder"]))]
  assert any(moved)
  assert json.loads((tmp_path / "eval_results.json").read_text())[
      "checkpoint_step"] == 2


def test_random_baseline_needs_no_checkpoint(tmp_path):
  config = tiny_eval_config("linear_eval", "random", num_steps=1)
  train.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  results = json.loads((tmp_path / "eval_results.json").read_text())
  assert results["pretrained"] == "random" and results["checkpoint_step"] == -1
  assert 0.0 <= results["knn_top1"] <= 1.0  # kNN of the random features


def _knn_by_hand(queries, query_labels, bank, bank_labels, k, temperature):
  """Weighted kNN written out: cosine similarities, the k largest vote
  with exp(s / T)."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  sims = unit(queries) @ unit(bank).T
  hits = 0
  for row, label in zip(sims, query_labels):
    top = np.argsort(-row, kind="stable")[:k]
    votes = np.zeros(10)
    np.add.at(votes, bank_labels[top], np.exp(row[top] / temperature))
    hits += int(np.argmax(votes) == label)
  return hits / len(query_labels)


def test_pixels_baseline_is_the_images_through_the_same_protocol(tmp_path):
  config = tiny_eval_config("linear_eval", "pixels", num_steps=2)
  config.knn.k = 20
  state = train.train_and_evaluate(config, str(tmp_path),
                                   devices=jax.devices()[:2])
  assert state.extra["encoder"] == {"params": {}, "batch_stats": {}}
  # The linear layer reads 8 x 8 x 3 pixels.
  assert state.params["linear"]["kernel"].shape == (8 * 8 * 3, 10)
  results = json.loads((tmp_path / "eval_results.json").read_text())
  assert results["pretrained"] == "pixels"
  assert results["checkpoint_step"] == -1
  train_split, test_split = (digits.load_digits_split(s)
                             for s in ("train", "test"))
  flat = lambda split: split["image"].reshape(len(split["image"]), -1) / 255.
  want = _knn_by_hand(flat(test_split), test_split["label"], flat(train_split),
                      train_split["label"], k=20, temperature=0.1)
  assert results["knn_top1"] == pytest.approx(want, abs=1 / 359 + 1e-9)
  assert results["knn_top1"] > 0.9  # raw digits are easy for kNN


def test_pixels_is_a_baseline_to_evaluate_not_to_train_or_finetune(tmp_path):
  with pytest.raises(ConfigError, match="no parameters to finetune"):
    train.train_and_evaluate(tiny_eval_config("finetune", "pixels"),
                             str(tmp_path / "ft"), devices=jax.devices()[:1])
  config = tiny_config()
  config.model = "pixels"
  with pytest.raises(ConfigError, match="pixels baseline of linear "
                                        "evaluation"):
    train.train_and_evaluate(config, str(tmp_path / "pre"),
                             devices=jax.devices()[:1])
  assert not (tmp_path / "ft").exists() and not (tmp_path / "pre").exists()


def test_label_fractions_are_deterministic_and_sized():
  full = digits.load_digits_split("train")
  for percent in (1, 10, 100):
    sub = digits.load_digits_split(f"train[:{percent}%]")
    assert len(sub["label"]) == round(len(full["label"]) * percent / 100)
    np.testing.assert_array_equal(
        sub["label"], digits.load_digits_split(f"train[:{percent}%]")[
            "label"])
    np.testing.assert_array_equal(sub["image"],
                                  full["image"][:len(sub["label"])])
  c = load_config("finetune", "imagenet_1pct")
  assert (c.dataset, c.train_split, c.eval_dataset, c.num_epochs) == (
      "imagenet2012_subset/1pct", "train", "imagenet2012", 60)
  c = load_config("finetune", "cifar10_10pct")
  assert (c.train_split, c.label_percent) == ("train", 10)


def test_protocols():
  simclr_le = load_config("linear_eval", "imagenet")
  assert (simclr_le.optimizer, simclr_le.nesterov) == ("sgd", True)
  assert (simclr_le.learning_rate, simclr_le.lr_scaling) == (0.1, "linear")
  assert (simclr_le.weight_decay, simclr_le.num_epochs) == (1e-6, 90)
  assert "center_crop(224, crop_fraction=0.875)" == simclr_le.eval_augment
  moco_le = load_config("linear_eval", "imagenet_moco")
  assert (moco_le.learning_rate, moco_le.lr_scaling) == (30.0, "none")
  assert (moco_le.num_epochs, tuple(moco_le.lr_decay_epochs)) == (100,
                                                                  (60, 80))
  assert moco_le.weight_decay == 0.0 and moco_le.lr_schedule == "step"
  with pytest.raises(ValueError, match="unknown option"):
    load_config("linear_eval", "cifar10_bogus")


def test_wrong_checkpoints_are_clear_errors(pretrained_run, tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    pretrained.load(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="no checkpoint in"):
    pretrained.load(str(tmp_path / "empty"))
  # A linear-eval run's checkpoint holds no pretrained encoder.
  config = tiny_eval_config("linear_eval", "random", num_steps=1)
  train.train_and_evaluate(config, str(tmp_path / "le"),
                           devices=jax.devices()[:1])
  with pytest.raises(CheckpointError, match="pretrains no encoder"):
    pretrained.load(str(tmp_path / "le"))
  # ... and as `pretrained=` it is rejected before the workdir is touched.
  config = tiny_eval_config("linear_eval", str(tmp_path / "le"), num_steps=1)
  with pytest.raises(CheckpointError, match="pretrains no encoder"):
    train.train_and_evaluate(config, str(tmp_path / "le2"),
                             devices=jax.devices()[:1])
  assert not (tmp_path / "le2").exists()
  with pytest.raises(ConfigError, match="config.pretrained is empty"):
    config = tiny_eval_config("linear_eval", "", num_steps=1)
    train.train_and_evaluate(config, str(tmp_path / "x"),
                             devices=jax.devices()[:1])


def reference_knn(queries, bank, labels, k, t, num_classes):
  q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  out = []
  for row in q @ b.T:
    top = np.argsort(-row)[:k]
    scores = np.zeros(num_classes)
    for i in top:
      scores[labels[i]] += np.exp(row[i] / t)
    out.append(np.argmax(scores))
  return np.array(out)


def test_knn_on_separable_features_is_perfect():
  rng = np.random.default_rng(0)
  centers = np.eye(4, 16) * 10
  labels = rng.integers(0, 4, size=200)
  bank = centers[labels] + rng.normal(scale=0.1, size=(200, 16))
  q_labels = rng.integers(0, 4, size=50)
  queries = centers[q_labels] + rng.normal(scale=0.1, size=(50, 16))
  assert knn.knn_accuracy(queries, q_labels, bank, labels, num_classes=4,
                          k=20) == 1.0


def test_knn_matches_numpy_reference_on_random_features():
  rng = np.random.default_rng(1)
  bank = rng.normal(size=(300, 8))
  labels = rng.integers(0, 5, size=300)
  queries = rng.normal(size=(40, 8))
  got = knn.knn_predict(queries, bank, labels, num_classes=5, k=25,
                        temperature=0.1, chunk=16)
  np.testing.assert_array_equal(
      got, reference_knn(queries, bank, labels, 25, 0.1, 5))


def test_online_probe_gradient_never_reaches_the_encoder():
  config = tiny_config()
  model, state = unsharded_model_and_state(simclr.METHOD, config)
  batch = fixed_batch(8, config.image_size)
  images = jnp.concatenate([batch["view1"], batch["view2"]])
  labels = jnp.arange(8) % 10

  def probe_only_loss(params):
    (_, _, logits), _ = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, images,
        train=True, mutable=["batch_stats"])
    # pylint: disable-next=g-import-not-at-top
    from contrastive_jax.methods import online_probe as probe
    return probe.loss_and_accuracy(logits[:8], labels, axis_name=None)[0]

  grads = jax.grad(probe_only_loss)(state.params)
  assert all(np.all(np.asarray(g) == 0)
             for g in jax.tree.leaves(grads["encoder"]))
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["head"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["probe"]))


def test_nesterov_field_reaches_the_optimizer():
  def two_updates(nesterov):
    c = ml_collections.ConfigDict(dict(
        optimizer="sgd", learning_rate=0.1, lr_scaling="none", batch_size=256,
        weight_decay=0.0, momentum=0.9, warmup_epochs=0.0,
        lr_schedule="constant", nesterov=nesterov))
    tx, _ = optim.create_optimizer_from_config(c, steps_per_epoch=1,
                                               total_steps=10)
    params = {"kernel": jnp.ones((2,))}
    state = tx.init(params)
    grads = {"kernel": jnp.ones((2,))}
    _, state = tx.update(grads, state, params)
    return tx.update(grads, state, params)[0]["kernel"]
  # Second SGD update: plain momentum -0.1*(1+0.9); Nesterov -0.1*(1+0.9*1.9).
  np.testing.assert_allclose(two_updates(False), -0.19, rtol=1e-6)
  np.testing.assert_allclose(two_updates(True), -0.271, rtol=1e-6)
