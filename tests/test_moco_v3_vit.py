"""MoCo v3 on a ViT: the step's frozen patch projection (--stop-grad-conv1),
its MLPs, the step on 1 and 8 devices, and the ViT recipes' learning
rates. The ResNet's step, the loss and the recipes are in
test_moco_v3.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from contrastive_jax import ema, models, optim, parallel
from contrastive_jax.config import lib as config_lib
from contrastive_jax.methods import moco_v3
from contrastive_jax.models import vit
from tests import method_checks
from tests.method_checks import assert_trees_close

# The smallest registered ViT: models/__init__.py's test-size `tiny_vit`
# (32 wide, 2 blocks; ~8 s for a 2-step run here) where it is registered,
# else timm's ViT-Ti (192 wide, 12 blocks; ~30 s).
VIT_MODEL = "tiny_vit" if "tiny_vit" in models.VIT_ENCODERS else "vit_tiny"
VIT_BATCH, VIT_SIZE = 8, 16


def tiny_vit_config():
  """The `vit_small` recipe (AdamW, wd 0.1 on every parameter, the 3-layer
  projector and the predictor both ending in a BN without affine, m 0.99)
  on VIT_MODEL at 16 px in 8-px patches (4 patches + the cls token), MLPs
  32 -> 16 wide, with a constant lr and m so that each step moves every
  trainable leaf. No online probe (ours, tested with the ResNet in
  test_moco_v3.py): on an all-zero label batch Adam turns its near-zero
  gradients into steps of noise that differ between 1 and 8 devices."""
  c = config_lib.load("moco_v3:vit_small")
  c.model, c.image_size, c.patch_size = VIT_MODEL, VIT_SIZE, 8
  for field in ("view_augment", "view_augment_2"):
    c[field] = c[field].replace("random_resized_crop(224,",
                                f"random_resized_crop({VIT_SIZE},")
  c.eval_augment = f"resize({VIT_SIZE})"
  c.batch_size, c.online_probe = VIT_BATCH, False
  for mlp in (c.head, c.predictor):
    mlp.hidden_dim, mlp.output_dim = 32, 16
  c.learning_rate, c.lr_scaling, c.lr_schedule = 1e-3, "none", "constant"
  c.warmup_epochs = 0.0
  c.ema_momentum, c.ema_momentum_schedule = 0.9, "constant"
  assert (c.optimizer, c.weight_decay, c.weight_decay_mask) == (
      "adamw", 0.1, "all")
  return c


initial_state, one_device = method_checks.step_fixtures(tiny_vit_config)


def _leaves_by_path(tree) -> dict:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_vit_patch_embedding_stays_at_its_init(one_device):
  """--stop-grad-conv1 (main_moco.py:108-110, vits.py:49-51): after two
  AdamW steps with decoupled decay 0.1 on every parameter, the patch
  projection is bit-identical to its init while every other encoder leaf
  has moved; the momentum encoder's copy is equal to it up to the rounding
  of m t + (1 - m) p with p = t (the reference's update, builder.py:60-61,
  rounds the same way); the MLPs are builder.py:112-122's."""
  states, history = one_device
  first, last = states[0], states[-1]
  assert all(np.isfinite(h["loss"]) for h in history)
  before = _leaves_by_path(first.params["encoder"])
  after = _leaves_by_path(last.params["encoder"])
  frozen = {"['patch_embed']['kernel']", "['patch_embed']['bias']"}
  assert frozen <= set(before) and "['cls_token']" in before
  for path in frozen:
    np.testing.assert_array_equal(after[path], before[path], err_msg=path)
  assert {p for p in before if np.array_equal(after[p], before[p])} == frozen
  target = _leaves_by_path(ema.target_params(last.opt_state)["encoder"])
  for path in frozen:
    np.testing.assert_allclose(target[path], before[path], rtol=1e-6,
                               atol=0, err_msg=path)
  # The mask the optimizer applies: exactly the patch projection.
  mask = _leaves_by_path(moco_v3.METHOD.frozen(first.params))
  assert {p for p, m in mask.items() if m} == {
      "['encoder']" + p for p in frozen}
  # No BatchNorm in a ViT: the MLPs' statistics are the only ones, and the
  # momentum encoder keeps its projector's.
  assert set(last.batch_stats) == {"head", "predictor"}
  assert set(last.extra["target_batch_stats"]) == {"head"}
  # Projector Linear-BN-ReLU x 2, Linear, BN without affine; predictor
  # Linear-BN-ReLU, Linear, BN without affine; no biases.
  head, pred = last.params["head"], last.params["predictor"]
  assert set(head) == {"dense1", "bn1", "dense2", "bn2", "dense3"}
  assert set(pred) == {"dense1", "bn1", "dense2"}
  assert "bn_out" in last.batch_stats["head"]
  assert "bn_out" in last.batch_stats["predictor"]
  for name, layer in (*head.items(), *pred.items()):
    if name.startswith("dense"):
      assert set(layer) == {"kernel"}


def _without_null_directions(params):
  """`params` without the two leaves whose gradient is 0 in exact
  arithmetic: the key third of every qkv bias (q.(k + b) adds q.b to a whole
  row of logits, which the softmax ignores) and the final LayerNorm's bias
  (a shift of every h that the projector's first BN subtracts again).
  Adam divides their float rounding noise by its own size, so they take
  +-lr steps of noise, different on 1 and 8 devices (torch's AdamW in the
  reference does the same)."""

  def drop(path, x):
    name = jax.tree_util.keystr(path)
    if name.endswith("['qkv']['bias']"):
      third = x.shape[0] // 3
      return np.concatenate([x[:third], x[2 * third:]])
    if name.endswith("['encoder']['norm']['bias']"):
      return x[:0]
    return x

  return jax.tree_util.tree_map_with_path(drop, params)


@pytest.mark.skipif(VIT_MODEL != "tiny_vit",
                    reason="only with the test-size tiny_vit: ViT-Ti's "
                    "8-device compile takes ~30 s on CPU")
def test_vit_eight_devices_match_one_device(one_device):
  states1, hist1 = one_device
  states8, hist8 = method_checks.run_steps(states1[0], tiny_vit_config(), 8)
  method_checks.assert_metrics_close(hist1, hist8,
                                     ("loss", "grad_norm", "ema_momentum"))
  s1, s8 = states1[-1], states8[-1]
  assert_trees_close(_without_null_directions(s1.params),
                     _without_null_directions(s8.params))
  # BN statistics of the first step: the second step's see h shifted by the
  # noise in the final LayerNorm's bias.
  assert_trees_close(states1[1].batch_stats, states8[1].batch_stats)
  assert_trees_close(states1[1].extra, states8[1].extra)
  target1, target8 = (_without_null_directions(ema.target_params(s.opt_state))
                      for s in (s1, s8))
  assert_trees_close(target1, target8)


# ------------------------------------------------------------ config --

def test_vit_learning_rates_and_schedules():
  """lr = 1.5e-4 * B / 256 (main_moco.py:190): 6e-4 at ViT-S's B 1024,
  2.4e-3 at ViT-B's 4096; 40 of 300 epochs of linear warmup, then half a
  cosine (main_moco.py:420-428); m 0.99 -> 1 (:431-434)."""
  for variant, peak in (("vit_small", 6e-4), ("vit_base", 2.4e-3)):
    c = config_lib.load(f"moco_v3:{variant}")
    assert optim.scaled_learning_rate(
        c.learning_rate, c.batch_size, c.lr_scaling) == pytest.approx(peak)
    # 1 step per epoch: the schedule in epochs.
    _, lr = optim.create_optimizer_from_config(
        c, steps_per_epoch=1, total_steps=300)
    assert [float(lr(e)) for e in (0, 20, 40, 170, 300)] == pytest.approx(
        [0.0, peak / 2, peak, peak / 2, 0.0], rel=1e-5, abs=1e-12)


def test_gelu_is_the_exact_gelu_with_its_derivative():
  # Our rule (jax >= 0.11 cannot differentiate erf inside shard_map) gives
  # jax.nn.gelu's exact values and derivative.
  x = jnp.linspace(-6.0, 6.0, 241, dtype=jnp.float32)
  np.testing.assert_array_equal(vit.gelu(x),
                                jax.nn.gelu(x, approximate=False))
  ours = jax.vmap(jax.grad(vit.gelu))(x)
  theirs = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
  # And inside shard_map, where erf's own derivative fails on jax >= 0.11.
  mesh = parallel.make_data_mesh(jax.devices()[:2])
  grad = jax.jit(jax.shard_map(
      jax.grad(lambda v: jnp.sum(vit.gelu(v))), mesh=mesh,
      in_specs=P(parallel.DATA_AXIS), out_specs=P(parallel.DATA_AXIS)))
  with jax.set_mesh(mesh):
    sharded = grad(jax.device_put(x[:240], parallel.batch_sharded(mesh)))
  np.testing.assert_allclose(sharded, ours[:240], rtol=1e-6, atol=1e-7)
