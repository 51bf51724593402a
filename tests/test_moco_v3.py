"""MoCo v3: the loss against a float64 NumPy reference, the step on 1 and 8
devices (ResNet; the ViT's in test_moco_v3_vit.py), what the momentum
encoder follows, the stop-gradient, and the recipes."""

import functools

import jax
import numpy as np
import pytest

from contrastive_jax import ema, losses, methods, optim
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import moco_v3
from tests import joint_embedding_checks as checks
from tests import method_checks
from tests.test_simclr_step import fixed_batch

BATCH, SIZE = checks.BATCH, checks.SIZE


def tiny_config(**overrides):
  """The digits demo at 8 px, with plain momentum SGD and a constant lr and
  momentum so that one step moves every parameter visibly."""
  c = checks.tiny_digits_config("moco_v3")
  c.optimizer = "sgd"
  c.learning_rate, c.lr_scaling, c.lr_schedule = 0.1, "none", "constant"
  c.warmup_epochs = 0.0
  c.ema_momentum, c.ema_momentum_schedule = 0.9, "constant"
  c.update(overrides)
  return c


# ------------------------------------------------------------ the loss --

def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_loss_and_grads(q1, q2, k1, k2, tau, num_devices=1):
  """ctr(q1, k2) + ctr(q2, k1) in float64, as the reference runs it on
  `num_devices` GPUs (builder.py:63-73): each GPU's n queries against all
  N gathered keys, labels arange(n) + n * rank, CrossEntropy (mean over
  its n) * 2 tau, DDP averaging the GPUs' gradients (and, here, losses).
  Returns the loss and its gradient w.r.t. q1 and q2 (k is a constant):
  dL/dq = 2 tau / N * J(q)^T (softmax - onehot) K / tau, with J(q) =
  (I - u u^T) / |q| the Jacobian of the normalisation."""
  q1, q2, k1, k2 = (np.asarray(a, np.float64) for a in (q1, q2, k1, k2))
  big_n = q1.shape[0]
  n = big_n // num_devices

  def ctr(q, k):
    keys = _unit(k)
    losses_, grads = [], []
    for rank in range(num_devices):
      qr = q[rank * n:(rank + 1) * n]
      u = _unit(qr)
      logits = u @ keys.T / tau
      labels = np.arange(n) + n * rank
      logits_max = logits.max(-1, keepdims=True)
      soft = np.exp(logits - logits_max)
      soft /= soft.sum(-1, keepdims=True)
      ce = -np.log(soft[np.arange(n), labels])
      losses_.append(ce.mean() * 2 * tau)
      onehot = np.zeros_like(soft)
      onehot[np.arange(n), labels] = 1
      d_u = (soft - onehot) @ keys / tau * 2 * tau / n / num_devices
      norm = np.linalg.norm(qr, axis=-1, keepdims=True)
      grads.append((d_u - np.sum(d_u * u, -1, keepdims=True) * u) / norm)
    return np.mean(losses_), np.concatenate(grads)

  loss_a, g1 = ctr(q1, k2)
  loss_b, g2 = ctr(q2, k1)
  return loss_a + loss_b, g1, g2


@pytest.mark.parametrize("num_devices", [1, 8])
def test_loss_and_gradient_match_the_float64_reference(num_devices):
  rng = np.random.default_rng(0)
  q1, q2, k1, k2 = (rng.normal(size=(16, 8)).astype(np.float32)
                    for _ in range(4))
  # k2 close to q1 and k1 to q2: the positives win, the offsets matter.
  k2 = k2 * 0.3 + q1
  k1 = k1 * 0.3 + q2
  tau = 0.2
  want, want_g1, want_g2 = reference_loss_and_grads(q1, q2, k1, k2, tau,
                                                    num_devices)

  loss, (g1, g2, gk1, gk2) = method_checks.sharded_value_and_grads(
      functools.partial(losses.moco_v3_loss, temperature=tau,
                        axis_name="data"), (q1, q2, k1, k2), num_devices)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(g1, want_g1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g2, want_g2, rtol=1e-5, atol=1e-7)
  # The keys are constants: stop_gradient inside the loss.
  assert not np.any(gk1) and not np.any(gk2)
  # The same global batch on one device gives the same loss: the rank
  # offset of the labels is what keeps the positives on the diagonal.
  np.testing.assert_allclose(
      losses.moco_v3_loss(q1, q2, k1, k2, temperature=tau), want, rtol=1e-6)


def test_loss_scale_is_two_tau():
  """CrossEntropy * 2 tau: with identical unit embeddings everywhere the
  logits tie, so each term is 2 tau log N."""
  x = np.ones((4, 3), np.float32)
  for tau in (0.2, 1.0):
    loss = losses.moco_v3_loss(x, x, x, x, temperature=tau)
    np.testing.assert_allclose(loss, 2 * (2 * tau * np.log(4)), rtol=1e-6)


# ------------------------------------------------------------ the step --

initial_state, one_device = method_checks.step_fixtures(tiny_config)


def test_eight_devices_match_one_device(one_device):
  # Global BN per view + keys gathered over the global batch: sharding the
  # batch changes nothing.
  method_checks.assert_matches_one_device(
      one_device, tiny_config(),
      ("loss", "grad_norm", "probe_loss", "ema_momentum"), ema_target=True)


def test_momentum_encoder_is_an_ema_of_encoder_and_projector(one_device):
  states, history = one_device
  # Only the encoder and the projector have a momentum copy; the
  # predictor and the online probe have none.
  method_checks.assert_ema_of(states, history, moco_v3.METHOD,
                              parts=("encoder", "head"), momentum=0.9)
  method_checks.assert_every_part_moved(
      states[0].params, states[-1].params, method_checks.ONLINE)


def test_no_gradient_to_the_momentum_encoder_and_the_views_pair_up(
    initial_state, one_device):
  """The loss's gradient w.r.t. the momentum encoder is zero; the step's
  first loss is ctr(q1, k2) + ctr(q2, k1) on its own outputs, each network
  normalising each view on its own; the MLPs are builder.py's."""
  config = tiny_config()
  model = moco_v3.create_model(config, axis_name=None)
  state = initial_state
  g_target, loss, outputs = method_checks.target_gradient_and_outputs(
      functools.partial(moco_v3.loss_fn, model=model,
                        temperature=config.temperature, axis_name=None),
      model.base, model.momentum, state, fixed_batch(BATCH, SIZE, seed=1))
  assert set(g_target) == {"encoder", "head"}
  assert all(not np.any(g) for g in jax.tree.leaves(g_target))
  want, _, _ = reference_loss_and_grads(*outputs, config.temperature)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(one_device[1][0]["loss"], want, rtol=1e-5)
  # No bias anywhere; the projector's output BN has no affine parameters
  # and the predictor has no output BN (builder.py:42-50, :105-109).
  head, pred = state.params["head"], state.params["predictor"]
  assert set(head) == {"dense1", "bn1", "dense2"}
  assert "bn_out" in state.batch_stats["head"]
  assert set(pred) == {"dense1", "bn1", "dense2"}
  assert "bn_out" not in state.batch_stats["predictor"]
  for mlp in (head, pred):
    assert set(mlp["dense1"]) == set(mlp["dense2"]) == {"kernel"}


# ------------------------------------------------------------ config --

# Every number of each recipe (README "MoCo v3: per config" cites them).
_LARS = dict(optimizer="lars", momentum=0.9,
             weight_decay_mask="exclude_bn_bias")
# CONFIG.md:109-113, :156-160: AdamW lr 1.5e-4 x B/256, wd 0.1 on every
# parameter (main_moco.py:228-230), 300 epochs, 40 warmup, tau 0.2, m 0.99
# (main_moco.py:99), ViT/16 at 224 px, crop 0.08-1 (main_moco.py:117).
_VIT = dict(optimizer="adamw", learning_rate=1.5e-4, weight_decay=0.1,
            weight_decay_mask="all", num_epochs=300, warmup_epochs=40.0,
            temperature=0.2, ema_momentum=0.99, patch_size=16,
            image_size=224, cifar_stem=False, width_multiplier=1,
            input_norm="imagenet", dataset="imagenet2012", num_classes=1000)
MOCO_V3_RECIPES = {
    "r50": dict(model="resnet50", cifar_stem=False, image_size=224,
                batch_size=4096, num_epochs=100, learning_rate=0.6,
                weight_decay=1e-6, ema_momentum=0.99, temperature=1.0,
                warmup_epochs=10.0, input_norm="imagenet",
                zero_init_residual=True, **_LARS),
    "r50_300": dict(model="resnet50", batch_size=4096, num_epochs=300,
                    learning_rate=0.3, weight_decay=1e-6, ema_momentum=0.99,
                    temperature=1.0, warmup_epochs=10.0,
                    zero_init_residual=True, **_LARS),
    "r50_1000": dict(model="resnet50", batch_size=4096, num_epochs=1000,
                     learning_rate=0.3, weight_decay=1.5e-6,
                     ema_momentum=0.996, temperature=1.0, warmup_epochs=10.0,
                     zero_init_residual=True, **_LARS),
    "vit_small": dict(model="vit_small", batch_size=1024, **_VIT),
    "vit_base": dict(model="vit_base", batch_size=4096, **_VIT),
    "cifar10": dict(model="resnet18", cifar_stem=True, image_size=32,
                    batch_size=256, num_epochs=1000, learning_rate=0.3,
                    weight_decay=1e-6, ema_momentum=0.99, temperature=0.2,
                    warmup_epochs=10.0, input_norm="cifar10_solo",
                    zero_init_residual=False, momentum=0.9,
                    weight_decay_mask="exclude_bn_bias",
                    # solo-learn's LARS (tests/test_recipes_solo.py).
                    optimizer="lars_solo", lars_eta=0.02,
                    lars_clip_lr=True),
    "digits": dict(model="tiny_resnet", image_size=16, batch_size=256,
                   num_epochs=30, **_LARS),
}
MOCO_V3_COMMON = dict(method="moco_v3", lr_scaling="linear",
                      lr_schedule="cosine", ema_momentum_schedule="cosine",
                      conv_init="torchvision")


@pytest.mark.parametrize("variant", sorted(MOCO_V3_RECIPES))
def test_recipe_numbers(variant):
  c = config_lib.load(f"moco_v3:{variant}")
  for field, want in {**MOCO_V3_COMMON, **MOCO_V3_RECIPES[variant]}.items():
    assert c[field] == want, field
  vit = variant.startswith("vit")
  head, pred = c.head, c.predictor
  # builder.py:104-109 (ResNet): projector of 2 layers, predictor without
  # the last BN; :112-122 (ViT): projector of 3, predictor with it.
  assert (head.num_layers, head.use_bn, head.output_bn, head.output_bn_scale,
          head.output_bias, head.dense_init) == (
              3 if vit else 2, True, True, False, False, "torch_linear")
  assert (pred.num_layers, pred.use_bn, pred.output_bn, pred.output_bias,
          pred.dense_init) == (2, True, vit, False, "torch_linear")
  if vit:
    assert pred.output_bn_scale is False
  assert pred.output_dim == head.output_dim
  if variant != "digits":
    assert (head.hidden_dim, head.output_dim, pred.hidden_dim) == (
        4096, 256, 4096)
  view1, view2 = c.view_augment.split("|"), c.view_augment_2.split("|")
  jitter = ("color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
            "saturation=0.2, hue=0.1, impl='torchvision')")
  for ops in (view1, view2):
    assert "impl='torchvision'" in ops[0]
    assert ops[1:3] == [jitter, "grayscale(p=0.2)"]
    assert ops[-1] == "flip_lr(p=0.5)"
  area = {"cifar10": "(0.08, 1.0)", "digits": "(0.25, 1.0)",
          "vit_small": "(0.08, 1.0)", "vit_base": "(0.08, 1.0)"}.get(
              variant, "(0.2, 1.0)")
  assert f"area={area}" in view1[0] and view1[0] == view2[0]
  if variant == "cifar10":  # no blur (aug:13-14, :36-37)
    assert view1[3:] == ["flip_lr(p=0.5)"]
    assert view2[3:] == ["solarize(p=0.2, threshold=0.5)", "flip_lr(p=0.5)"]
  else:
    assert view1[3].startswith("gaussian_blur(p=1.0, sigma=(0.1, 2.0)")
    assert view2[3].startswith("gaussian_blur(p=0.1, sigma=(0.1, 2.0)")
    assert view2[4] == "solarize(p=0.2, threshold=0.5)"
    assert len(view1) == 5 and len(view2) == 6
  if variant.startswith(("r50", "vit")):
    assert view1[0].startswith("random_resized_crop(224,")
    assert "method='bilinear', antialias=True" in view1[0]
  config_checks.validate(c, num_devices=8, num_processes=1)


def test_reference_schedules():
  c = config_lib.load("moco_v3")  # the default: the 100-epoch command
  assert c.num_epochs == 100
  assert optim.scaled_learning_rate(
      c.learning_rate, c.batch_size, c.lr_scaling) == pytest.approx(9.6)
  # m = 1 - 0.5 (1 + cos(pi t / T)) (1 - m0) (main_moco.py:431-434).
  m = ema.momentum_schedule(c.ema_momentum, c.ema_momentum_schedule, 100)
  assert [float(m(k)) for k in (0, 50, 100)] == pytest.approx(
      [0.99, 0.995, 1.0])
  # lr: linear warmup from 0, then half-cycle cosine (main_moco.py:420-428).
  lr = optim.learning_rate_schedule(peak_lr=9.6, total_steps=100,
                                    warmup_steps=10)
  assert [float(lr(k)) for k in (0, 5, 10, 55, 100)] == pytest.approx(
      [0.0, 4.8, 9.6, 4.8, 0.0], abs=1e-5)


def test_method_fields():
  method = methods.get_method("moco_v3")
  params = {"encoder": {"c": 1}, "head": {"d": 2}, "predictor": {"e": 3},
            "probe": {"linear": {"kernel": 4}}}
  assert method.ema(params) == {"encoder": {"c": 1}, "head": {"d": 2}}
  assert method.no_decay(params)["probe"]["linear"]["kernel"] is True
  assert method.no_decay(params)["predictor"]["e"] is False
  assert method.constant_lr is None
  # --stop-grad-conv1 (vits.py:49-51): a ViT's patch projection, nothing
  # of a ResNet.
  assert method.frozen is moco_v3.stop_grad_conv1
  assert not any(jax.tree.leaves(method.frozen(params)))
  vit_params = {"encoder": {"patch_embed": {"kernel": 1, "bias": 2},
                            "cls_token": 3, "block1": {"norm1": {"scale": 4}}},
                "head": {"d": 5}}
  assert method.frozen(vit_params) == {
      "encoder": {"patch_embed": {"kernel": True, "bias": True},
                  "cls_token": False, "block1": {"norm1": {"scale": False}}},
      "head": {"d": False}}
  assert method.pretrains_encoder and method.num_views == 2
  assert "moco_v3" in methods.pretraining_methods()
  state = {"params": params, "batch_stats": {"encoder": {"m": 0}}}
  assert method.encoder_variables(state) == {"params": {"c": 1},
                                             "batch_stats": {"m": 0}}


@pytest.mark.parametrize("overrides,message", [
    (dict(temperature=0.0), r"config.temperature=0.0 .*> 0"),
    (dict(ema_momentum=1.5), r"config.ema_momentum=1.5 .*\[0, 1\]"),
    (dict(ema_momentum_schedule="linear"),
     r"config.ema_momentum_schedule='linear' .*constant, cosine"),
    (dict(predictor=None), "config.predictor is missing"),
    ({"predictor.num_layers": 0}, r"config.predictor.num_layers=0 .*>= 1"),
    ({"predictor.output_dim": 5},
     r"config.predictor.output_dim=5 .*must equal config.head.output_dim=32"),
])
def test_bad_moco_v3_fields_name_the_field(overrides, message):
  c = config_lib.load("moco_v3:digits")
  method_checks.set_fields(c, overrides)
  with pytest.raises(ConfigError, match=message):
    config_checks.validate(c, num_devices=1, num_processes=1)


def test_unknown_variant():
  with pytest.raises(ValueError, match="unknown moco_v3 config variant"):
    config_lib.load("moco_v3:vit_large")


@pytest.mark.parametrize("variant,lr", [("imagenet_mocov3", 0.1),
                                        ("imagenet_mocov3_vit", 3.0)])
def test_linear_eval_protocol(variant, lr):
  """MoCo v3's main_lincls.py @c349e6e: SGD lr * B/256 (ViT --lr=3),
  momentum 0.9, no decay, B 1024, 90 epochs, cosine, fc N(0, 0.01^2); the
  MoCo views."""
  c = config_lib.load(f"linear_eval:{variant}")
  assert (c.optimizer, c.learning_rate, c.lr_scaling, c.momentum,
          c.nesterov, c.weight_decay, c.batch_size, c.num_epochs,
          c.lr_schedule, c.classifier_init_stddev, c.feature_bn) == (
              "sgd", lr, "linear", 0.9, False, 0.0, 1024, 90, "cosine", 0.01,
              False)
  assert c.view_augment == config_lib.load(
      "linear_eval:imagenet_moco").view_augment
  assert "method='bilinear'" in c.eval_augment
  for bad in ("imagenet_vit", "cifar10_moco_vit"):
    with pytest.raises(ValueError, match="_mocov3_vit"):
      config_lib.load(f"linear_eval:{bad}")
  with pytest.raises(ValueError, match="finetuning has one recipe"):
    config_lib.load("finetune:imagenet_mocov3")
