"""The SimCLR train step alone: sharded equals unsharded, and it learns."""

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax import method_steps, optim, parallel
from contrastive_jax.config import lib as config_lib


def tiny_config():
  c = config_lib.load("simclr:digits")
  # The digits recipe's views at 8 px: image_size is their output size.
  c.image_size = 8
  c.view_augment = ("random_resized_crop(8, area=(0.25, 1.0))|flip_lr"
                    "|color_jitter(0.5, p=0.8)|grayscale(p=0.2)")
  c.eval_augment = "resize(8)"
  c.batch_size = 16
  c.optimizer = "sgd"
  c.learning_rate = 0.05
  c.lr_scaling = "none"
  c.warmup_epochs = 0.0
  c.lr_schedule = "constant"
  return c


def fixed_batch(batch_size, image_size, seed=0):
  rng = np.random.default_rng(seed)
  shape = (batch_size, image_size, image_size, 3)
  base = rng.uniform(size=shape).astype(np.float32)
  noise = lambda: rng.normal(scale=0.05, size=shape).astype(np.float32)
  return {"view1": np.clip(base + noise(), 0, 1),
          "view2": np.clip(base + noise(), 0, 1),
          "label": np.zeros((batch_size,), np.int32)}


def build_unguarded(config, num_devices):
  """(mesh, initial state, the method's jitted step without the non-finite
  guard) for `config.method` on the first num_devices devices."""
  mesh = parallel.make_data_mesh(jax.devices()[:num_devices])
  built = method_steps.build(config, mesh, steps_per_epoch=10,
                             total_steps=100, guard=False)
  with jax.set_mesh(mesh):
    state = built.init(jax.random.PRNGKey(0))
  return mesh, state, built.train_step


def unsharded_model_and_state(method, config):
  """The model of `method` (a `methods.Method`; BatchNorm over the local
  batch, no mesh axis) and its initial state, for tests that call the model
  or loss directly."""
  model = method.create_model(config, axis_name=None)
  tx, _ = optim.create_optimizer_from_config(config, steps_per_epoch=10,
                                             total_steps=100, ema=method.ema,
                                             no_decay=method.no_decay)
  return model, method.init_state(jax.random.PRNGKey(0), model=model, tx=tx,
                                  config=config)


def run_steps(config, batch, num_devices, num_steps):
  """num_steps updates on the same global batch, on num_devices devices:
  (the final state on the host, each step's metrics)."""
  mesh, state, step = build_unguarded(config, num_devices)
  with jax.set_mesh(mesh):
    global_batch = parallel.global_batch(batch, mesh)
    history = []
    for _ in range(num_steps):
      state, metrics = step(state, global_batch)
      history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def test_loss_decreases_on_a_fixed_batch():
  config = tiny_config()
  batch = fixed_batch(config.batch_size, config.image_size)
  state, history = run_steps(config, batch, num_devices=1, num_steps=6)
  losses = [h["loss"] for h in history]
  assert all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.05, losses
  assert int(state.step) == 6
  # The untrained NT-Xent is at most about log(2N-1), chance among 2N-1
  # candidates (the views differ only by small noise, and the reference's
  # BN head already tells many pairs apart). `loss`, what is optimised, is
  # the reference's scale: twice it.
  assert 0 < history[0]["nt_xent"] < np.log(2 * config.batch_size - 1) + 0.5
  np.testing.assert_allclose(losses, [2 * h["nt_xent"] for h in history],
                             rtol=1e-6)


def test_eight_devices_match_one_device():
  # Global BatchNorm + globally gathered negatives: the sharded step is the
  # same computation as the single-device step on the whole batch.
  config = tiny_config()
  batch = fixed_batch(config.batch_size, config.image_size, seed=1)
  state1, hist1 = run_steps(config, batch, num_devices=1, num_steps=2)
  state8, hist8 = run_steps(config, batch, num_devices=8, num_steps=2)
  for h1, h8 in zip(hist1, hist8):
    np.testing.assert_allclose(h8["loss"], h1["loss"], rtol=1e-5)
    np.testing.assert_allclose(h8["grad_norm"], h1["grad_norm"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(state1.params),
                  jax.tree.leaves(state8.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4,
                               atol=1e-6)
  for a, b in zip(jax.tree.leaves(state1.batch_stats),
                  jax.tree.leaves(state8.batch_stats)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4,
                               atol=1e-6)


def test_half_precision_step_is_finite():
  config = tiny_config()
  config.half_precision = True
  batch = fixed_batch(config.batch_size, config.image_size, seed=2)
  state, history = run_steps(config, batch, num_devices=2, num_steps=2)
  assert all(np.isfinite(h["loss"]) for h in history)
  for leaf in jax.tree.leaves(state.params):
    assert leaf.dtype == jnp.float32
