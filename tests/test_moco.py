"""MoCo: shuffle-BN, the queue, the step on 1 and 8 devices, config checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from contrastive_jax import ema, parallel
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.methods import shuffle_bn
from contrastive_jax.config import defaults as config_defaults
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import moco
from tests.test_simclr_step import (build_unguarded, fixed_batch, run_steps,
                                    unsharded_model_and_state)

pytestmark = pytest.mark.usefixtures("optimized_xla")


def load_config(name="moco_v2", variant="digits"):
  return config_lib.load(name if variant is None else f"{name}:{variant}")


def tiny_config(**overrides):
  c = load_config()
  c.image_size = 8
  c.batch_size = 32
  c.queue_size = 96              # 3 batches: wraps around within 4 steps
  c.bn_groups_per_device = 2
  c.learning_rate = 0.05
  c.lr_scaling = "none"
  c.lr_schedule = "constant"
  c.update(overrides)
  # The digits recipe's views at image_size (its output size, checked).
  if "view_augment" not in overrides:
    c.view_augment = config_defaults.moco_views(
        c.image_size, version=2, blur=False, crop_area=(0.25, 1.0))
  if "eval_augment" not in overrides:
    c.eval_augment = f"resize({c.image_size})"
  return c


# ------------------------------------------------------------ shuffle-BN --

@pytest.mark.parametrize("num_groups,group_size", [(2, 1), (8, 4), (5, 3)])
def test_derangement_moves_every_sample_to_another_group(num_groups,
                                                         group_size):
  n = num_groups * group_size
  seen = set()
  for seed in range(5):
    perm = np.asarray(shuffle_bn.group_derangement(
        jax.random.key(seed), num_groups, group_size))
    assert sorted(perm) == list(range(n))
    key_group = np.arange(n) // group_size  # the group slot j is normalised in
    query_group = perm // group_size        # the group its sample came from
    assert np.all(key_group != query_group)
    seen.add(tuple(perm))
  assert len(seen) > 1 or n == 2  # random, not one fixed permutation


def test_derangement_needs_two_groups():
  with pytest.raises(ValueError, match="at least 2 BN groups"):
    shuffle_bn.group_derangement(jax.random.key(0), 1, 8)


def _sharded(fn, num_devices, in_specs, out_specs):
  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  step = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs,
                               out_specs=out_specs))

  def call(*args):
    placed = [jax.device_put(a, NamedSharding(mesh, s))
              for a, s in zip(args, in_specs)]
    with jax.set_mesh(mesh):
      return jax.tree.map(np.asarray, step(*placed))
  return call


def shuffled_group_tags(perm, num_devices, groups_per_device):
  """`shuffle_bn.shuffled_apply` of `perm` over the ids 0..n-1 on
  num_devices x groups_per_device BN groups, with an encoder that tags each
  row with the global group it is normalised in: (this device's rows,
  every row), each [n, 2] = (id, group)."""
  n_global = len(perm)
  group_size = n_global // (num_devices * groups_per_device)

  def per_device(x, perm):
    def encode(local):
      rows = jnp.arange(local.shape[0]) // group_size
      group = jax.lax.axis_index("data") * groups_per_device + rows
      return jnp.stack([local[:, 0], group.astype(jnp.float32)], 1), None
    mine, everyone, _ = shuffle_bn.shuffled_apply(encode, x, perm,
                                                  axis_name="data")
    return mine, everyone

  ids = np.arange(n_global, dtype=np.float32)[:, None]
  return _sharded(per_device, num_devices, (P("data"), P()),
                  (P("data"), P()))(ids, perm)


@pytest.mark.parametrize("num_devices,groups_per_device",
                         [(8, 1), (2, 4), (1, 8)])
def test_shuffled_keys_come_back_in_order_from_other_bn_groups(
    num_devices, groups_per_device):
  n_global, num_groups = 32, num_devices * groups_per_device
  group_size = n_global // num_groups
  perm = shuffle_bn.group_derangement(jax.random.key(1), num_groups,
                                      group_size)
  mine, everyone = shuffled_group_tags(perm, num_devices, groups_per_device)
  np.testing.assert_array_equal(mine[:, 0], np.arange(n_global))
  np.testing.assert_array_equal(everyone[:, 0], np.arange(n_global))
  query_group = np.arange(n_global) // group_size
  assert np.all(everyone[:, 1] != query_group)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_queue_is_a_fifo_of_the_global_keys(num_devices):
  n_global, dim, size = 16, 4, 48

  def per_device(queue, ptr, keys, perm):
    _, global_keys, _ = shuffle_bn.shuffled_apply(
        lambda x: (x, None), keys, perm, axis_name="data")
    return moco.enqueue(queue, ptr, global_keys)

  step = _sharded(per_device, num_devices, (P(), P(), P("data"), P()),
                  (P(), P()))
  rng = np.random.default_rng(0)
  queue = rng.normal(size=(size, dim)).astype(np.float32)
  ptr = np.int32(0)
  expected_queue, expected_ptr = queue.copy(), 0
  for t in range(5):  # wraps around after 3
    keys = rng.normal(size=(n_global, dim)).astype(np.float32)
    perm = shuffle_bn.group_derangement(jax.random.key(t), 8, 2)
    queue, ptr = step(queue, ptr, keys, perm)
    expected_queue[expected_ptr:expected_ptr + n_global] = keys
    expected_ptr = (expected_ptr + n_global) % size
    np.testing.assert_array_equal(queue, expected_queue)
    assert int(ptr) == expected_ptr


# ------------------------------------------------------------ the step --

def _assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


def test_one_device_with_8_bn_groups_equals_8_devices():
  # Per-device BN and shuffle-BN on 8 devices are the same computation as 8
  # BN groups on one device: same groups, same permutation, same stats.
  batch = fixed_batch(32, 8, seed=1)
  state1, hist1 = run_steps(tiny_config(bn_groups_per_device=8), batch,
                            num_devices=1, num_steps=4)
  state8, hist8 = run_steps(tiny_config(bn_groups_per_device=1), batch,
                            num_devices=8, num_steps=4)
  for h1, h8 in zip(hist1, hist8):
    for name in ("loss", "contrastive_accuracy", "grad_norm",
                 "ema_momentum", "learning_rate"):
      np.testing.assert_allclose(h8[name], h1[name], rtol=1e-4, err_msg=name)
  assert all(np.isfinite(h["loss"]) for h in hist1)
  _assert_trees_close(state8.params, state1.params)
  _assert_trees_close(state8.batch_stats, state1.batch_stats)
  _assert_trees_close(state8.extra, state1.extra)
  _assert_trees_close(ema.target_params(state8.opt_state),
                      ema.target_params(state1.opt_state))
  # 4 steps of 32 keys into a queue of 96: the pointer wrapped to 32.
  assert int(state1.extra["queue_ptr"]) == int(state8.extra["queue_ptr"]) == 32
  norms = np.linalg.norm(state1.extra["queue"], axis=1)
  np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
  assert int(ema.ema_state(state1.opt_state).count) == 4


def test_sync_key_bn_step_enqueues_its_keys_and_learns():
  # Same batch every step: the query learns to pick its key out of a queue
  # that soon holds the keys of the same images under a lagging encoder.
  config = tiny_config(key_bn="sync", bn_groups_per_device=1, queue_size=64,
                       learning_rate=0.5, temperature=0.2)
  batch = fixed_batch(32, 8, seed=2)
  mesh, state, step = build_unguarded(config, num_devices=1)
  before = jax.device_get(state)
  with jax.set_mesh(mesh):
    global_batch = parallel.global_batch(batch, mesh)
    state, metrics = step(state, global_batch)
    after = jax.device_get(state)
    history = [jax.device_get(metrics)]
    for _ in range(7):
      state, metrics = step(state, global_batch)
      history.append(jax.device_get(metrics))
  # The keys of step 1: the key encoder (= the initial query encoder, with
  # BN over the whole batch) on view 2, L2-normalised, at rows 0..31.
  key_model = moco.create_model(config, axis_name=None).key
  (_, k, _), _ = key_model.apply(
      {"params": ema.target_params(before.opt_state),
       "batch_stats": before.extra["key_batch_stats"]},
      batch["view2"], train=True, mutable=["batch_stats"])
  k = k / np.linalg.norm(k, axis=1, keepdims=True)
  np.testing.assert_allclose(after.extra["queue"][:32], k, rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_array_equal(after.extra["queue"][32:],
                                before.extra["queue"][32:])
  assert int(after.extra["queue_ptr"]) == 32
  # The key encoder moved towards the updated query encoder.
  m = float(history[0]["ema_momentum"])
  for t0, q1, t1 in zip(jax.tree.leaves(ema.target_params(before.opt_state)),
                        jax.tree.leaves(after.params),
                        jax.tree.leaves(ema.target_params(after.opt_state))):
    np.testing.assert_allclose(t1, m * t0 + (1 - m) * q1, rtol=1e-5,
                               atol=1e-6)
  losses = [h["loss"] for h in history]
  assert all(np.isfinite(losses))
  # Steps 1 and 2 still saw some of the queue's random initial vectors;
  # from step 3 on it holds only real keys.
  assert losses[-1] < losses[2] - 0.2, losses


def test_key_encoder_gets_zero_gradient():
  config = tiny_config()
  model, state = unsharded_model_and_state(moco.METHOD, config)
  batch = {k: jnp.asarray(v) for k, v in fixed_batch(32, 8, seed=3).items()}
  (g_query, g_key), _ = jax.jit(jax.grad(
      functools.partial(moco.loss_fn, model=model, config=config,
                        axis_name=None),
      argnums=(0, 1), has_aux=True))(
          state.params, ema.target_params(state.opt_state), batch,
          batch_stats=state.batch_stats, extra=state.extra, rng=state.rng)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(g_key))
  assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(
      g_query["encoder"]))


# ------------------------------------------------------------ config --

@pytest.mark.parametrize("overrides,num_devices,field,message", [
    (dict(queue_size=1000), 8, "queue_size", "multiple of the 256 keys"),
    (dict(symmetric_loss=True, queue_size=256), 8, "queue_size",
     "multiple of the 512 keys"),
    (dict(key_bn="ghost"), 8, "key_bn", "shuffle, shuffle_derange, sync"),
    (dict(bn_groups_per_device=3), 8, "bn_groups_per_device",
     "dividing the 32 examples"),
    (dict(bn_groups_per_device=1), 1, "bn_groups_per_device",
     "at least 2 BN groups"),
    (dict(ema_momentum=1.5), 8, "ema_momentum", r"\[0, 1\]"),
    (dict(ema_momentum_schedule="linear"), 8, "ema_momentum_schedule",
     "constant, cosine"),
])
def test_bad_moco_fields_name_the_field(overrides, num_devices, field,
                                        message):
  c = load_config()
  c.update(overrides)
  with pytest.raises(ConfigError, match=f"config.{field}=.*{message}"):
    config_checks.validate(c, num_devices=num_devices, num_processes=1)


def test_sync_key_bn_needs_no_second_group():
  c = load_config()
  c.update(dict(key_bn="sync", bn_groups_per_device=1))
  config_checks.validate(c, num_devices=1, num_processes=1)


@pytest.mark.parametrize("name,variants", [
    ("moco_v1", [None, "imagenet", "cifar10", "digits"]),
    ("moco_v2", [None, "imagenet", "imagenet800", "cifar10", "digits"])])
def test_variants_load_and_validate(name, variants):
  for variant in variants:
    c = load_config(name, variant)
    assert c.method == "moco"
    devices = 8 if c.bn_groups_per_device == 1 else 1
    config_checks.validate(c, num_devices=devices, num_processes=1)


def test_recipes():
  v1, v2 = load_config("moco_v1", None), load_config("moco_v2", None)
  for c in (v1, v2):
    assert (c.model, c.image_size, c.batch_size) == ("resnet50", 224, 256)
    assert (c.queue_size, c.ema_momentum, c.head.output_dim) == (65536,
                                                                 0.999, 128)
    assert (c.optimizer, c.learning_rate, c.lr_scaling) == ("sgd", 0.03,
                                                            "linear")
    assert (c.momentum, c.weight_decay, c.warmup_epochs) == (0.9, 1e-4, 0.0)
    assert c.num_epochs == 200
    assert "area=(0.2, 1.0)" in c.view_augment
  assert (v1.temperature, v1.head.num_layers) == (0.07, 1)
  assert (v1.lr_schedule, tuple(v1.lr_decay_epochs)) == ("step", (120, 160))
  assert "color_jitter(1.0, p=1.0, brightness=0.4, contrast=0.4, " \
         "saturation=0.4, hue=0.4, impl='torchvision')" in v1.view_augment
  # torchvision's RandomResizedCrop, as main_moco.py.
  assert "impl='torchvision'" in v1.view_augment.split("|")[0]
  assert "gaussian_blur" not in v1.view_augment
  assert (v2.temperature, v2.head.num_layers, v2.lr_schedule) == (
      0.2, 2, "cosine")
  assert "hue=0.1" in v2.view_augment and "p=0.8" in v2.view_augment
  assert "gaussian_blur(p=0.5, sigma=(0.1, 2.0)" in v2.view_augment
  assert load_config("moco_v2", "imagenet800").num_epochs == 800
  for name in ("moco_v1", "moco_v2"):
    c = load_config(name, "cifar10")
    assert (c.model, c.cifar_stem, c.image_size) == ("resnet18", True, 32)
    assert (c.queue_size, c.batch_size) == (4096, 512)
    assert "gaussian_blur" not in c.view_augment
