"""The optimizer hook's pieces (`optim.optimizer_from_config`, `Requests`),
the step context and the dropout rngs, each against its reference written
out here: DINO's per-parameter clipping, cosine weight decay and last layer
frozen for its first epoch (facebookresearch/dino utils.py clip_gradients,
cosine_scheduler, cancel_gradients_last_layer)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from contrastive_jax import methods, optim, step_context
from contrastive_jax.config import checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      optimizer='adamw', learning_rate=0.1, lr_scaling='none',
      batch_size=256, weight_decay=0.04, momentum=0.9, warmup_epochs=0.0,
      lr_schedule='constant', lr_decay_epochs=(), lr_decay_factor=0.1,
      weight_decay_mask='all'))
  config.update(overrides)
  return config


def _params():
  return {'body': {'kernel': jnp.full((3, 2), 0.5)},
          'last': {'kernel': jnp.full((2, 2), -1.0)}}


def _grads(step):
  return {'body': {'kernel': jnp.full((3, 2), 10.0 + step)},
          'last': {'kernel': jnp.full((2, 2), 0.01 * (step + 1))}}


def _run(tx, params, steps):
  state = tx.init(params)
  history = []
  for step in range(steps):
    updates, state = tx.update(_grads(step), state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history


def test_clip_per_parameter_is_dinos():
  grads = {'a': jnp.full((4,), 3.0), 'b': jnp.full((2,), 0.1)}
  clipped, _ = optim.clip_per_parameter(1.0).update(grads, optax.EmptyState())
  for name, g in grads.items():
    g = np.asarray(g, np.float64)
    norm = np.linalg.norm(g)
    coefficient = 1.0 / (norm + 1e-6)
    want = g * coefficient if coefficient < 1 else g
    np.testing.assert_allclose(clipped[name], want, rtol=1e-6)


def test_cosine_weight_decay_is_dinos_and_logged():
  total = 10
  built = optim.optimizer_from_config(
      _config(weight_decay_end=0.4), steps_per_epoch=5, total_steps=total)
  schedule = built.schedules['weight_decay']
  # utils.cosine_scheduler(0.04, 0.4, epochs, niter_per_ep) without warm-up:
  # end + 0.5 (base - end)(1 + cos(pi i / len)).
  for i in (0, 3, 7, 10):
    want = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * i / total))
    assert float(schedule(i)) == pytest.approx(want, rel=1e-6)
  # AdamW's decoupled decay at step i: p <- p - lr (adam + wd_i p).
  params = {'w': jnp.array([2.0])}
  tx = built.tx
  state = tx.init(params)
  p = params
  for i in range(3):
    updates, state = tx.update({'w': jnp.zeros(1)}, state, p)
    want = p['w'] - 0.1 * float(schedule(i)) * p['w']
    p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(p['w'], want, rtol=1e-6)


def test_a_group_frozen_for_an_epoch_gets_no_update_then_trains():
  requests = optim.Requests(
      frozen_for_epochs=((lambda p: {'body': {'kernel': False},
                                     'last': {'kernel': True}}, 1.0),))
  built = optim.optimizer_from_config(
      _config(), steps_per_epoch=3, total_steps=10, requests=requests)
  history = _run(built.tx, _params(), 5)
  for params in history[:3]:   # epoch 0: neither gradient nor decay
    np.testing.assert_array_equal(params['last']['kernel'], -1.0)
  assert not np.allclose(history[3]['last']['kernel'], -1.0)
  assert not np.allclose(history[0]['body']['kernel'], 0.5)
  # With no frozen group the same run moves the last layer from step 1.
  plain = _run(optim.optimizer_from_config(
      _config(), steps_per_epoch=3, total_steps=10).tx, _params(), 1)
  assert not np.allclose(plain[0]['last']['kernel'], -1.0)


def test_with_the_new_fields_off_the_chain_is_the_old_one():
  """Same state structure as before the hook (old checkpoints restore; also
  tests/test_old_checkpoints.py) and the same updates."""
  for name in ('lars', 'sgd', 'adamw'):
    config = _config(optimizer=name)
    old_style, _ = optim.create_optimizer_from_config(
        config, steps_per_epoch=3, total_steps=10)
    off = _config(optimizer=name, weight_decay_end=-1.0, clip_grad=0.0)
    new = optim.optimizer_from_config(off, steps_per_epoch=3, total_steps=10)
    assert (jax.tree.structure(old_style.init(_params())) ==
            jax.tree.structure(new.tx.init(_params())))
    assert new.schedules == {}
    for a, b in zip(_run(old_style, _params(), 2), _run(new.tx, _params(), 2)):
      jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize('field,value', [
    ('weight_decay_end', -0.5), ('weight_decay_end', float('nan')),
    ('weight_decay_end', 'high'), ('clip_grad', -1.0),
    ('clip_grad', float('inf'))])
def test_bad_new_fields_are_one_config_error(field, value):
  config = config_lib.load('simclr:digits')
  config[field] = value
  with pytest.raises(ConfigError, match=f'config.{field}='):
    checks.validate(config, num_devices=1, num_processes=1)


def test_a_method_extends_its_optimizer_through_the_hook():
  """`Method.optimizer` wraps the default with its requests changed: no
  edit to optim.py or the step builder."""
  simclr = methods.get_method('simclr')
  last = lambda p: jax.tree.map(lambda _: False, p) | {  # noqa: E731
      'head': jax.tree.map(lambda _: True, p['head'])}

  def optimizer(config, *, requests, **counts):
    return optim.optimizer_from_config(
        config, requests=dataclasses.replace(
            requests, frozen_for_epochs=((last, 1.0),)), **counts)

  method = dataclasses.replace(simclr, optimizer=optimizer)
  config = config_lib.load('simclr:digits')
  config.warmup_epochs = 0.0
  built = method.optimizer(config, steps_per_epoch=2, total_steps=4,
                           requests=method.optimizer_requests)
  params = {'encoder': {'k': jnp.ones(2)}, 'head': {'k': jnp.ones(2)},
            'probe': {'k': jnp.ones(2)}}
  state = built.tx.init(params)
  grads = jax.tree.map(lambda p: p * 0.5, params)
  updates, _ = built.tx.update(grads, state, params)
  assert float(jnp.abs(updates['head']['k']).sum()) == 0.0
  assert float(jnp.abs(updates['encoder']['k']).sum()) > 0.0


def test_step_context_epochs_and_metrics():
  context = step_context.StepContext(
      steps_per_epoch=4, total_steps=8, learning_rate=lambda s: 0.1 * s,
      schedules={'weight_decay': lambda s: 0.04 + s})
  assert float(context.epoch(6)) == 1.5
  metrics = context.metrics(2)
  assert float(metrics['learning_rate']) == pytest.approx(0.2)
  assert float(metrics['weight_decay']) == pytest.approx(2.04)


def test_dropout_rngs_differ_by_step_and_device_and_repeat():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ('data',))
  rng = jax.random.PRNGKey(3)

  def per_device(step):
    keys = step_context.dropout_rngs(rng, step, axis_name='data')
    return jax.random.key_data(keys['dropout'])[None]

  run = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=None,
                              out_specs=jax.sharding.PartitionSpec('data')))
  at_1, at_2 = np.asarray(run(1)), np.asarray(run(2))
  assert len({tuple(k) for k in at_1}) == 4          # per device
  assert not np.array_equal(at_1, at_2)             # per step
  np.testing.assert_array_equal(at_1, np.asarray(run(1)))  # a resume
