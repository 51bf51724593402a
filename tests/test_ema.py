"""The parameter EMA transformation, against hand-computed numbers."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from contrastive_jax import ema, optim
from contrastive_jax.errors import ConfigError

PARAMS = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
GRADS = [{"w": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array(1.0)},
         {"w": jnp.array([-1.0, 0.0, 2.0]), "b": jnp.array(-0.5)},
         {"w": jnp.array([0.3, 0.3, 0.3]), "b": jnp.array(0.25)}]
LR = 0.1


def _run(momentum):
  """Three jitted SGD + EMA updates; returns (params, opt_state) history."""
  tx = optax.chain(optax.sgd(LR), ema.ema_params(momentum))

  @jax.jit
  def step(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = PARAMS, tx.init(PARAMS)
  history = []
  for grads in GRADS:
    params, opt_state = step(params, opt_state, grads)
    history.append((params, opt_state))
  return history


def _reference(momenta):
  """float64: params follow SGD, target <- m target + (1 - m) new params."""
  params = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
  target = dict(params)
  out = []
  for grads, m in zip(GRADS, momenta):
    params = {k: params[k] - LR * np.asarray(grads[k], np.float64)
              for k in params}
    target = {k: m * target[k] + (1 - m) * params[k] for k in params}
    out.append(target)
  return out


def _assert_tree_close(actual, expected):
  for k in expected:
    np.testing.assert_allclose(np.asarray(actual[k]), expected[k], rtol=1e-6,
                               atol=1e-7)


def test_constant_momentum_tracks_the_updated_params():
  history = _run(0.9)
  for (params, opt_state), expected in zip(history, _reference([0.9] * 3)):
    _assert_tree_close(ema.target_params(opt_state), expected)
    assert float(ema.ema_state(opt_state).momentum) == pytest.approx(0.9)
  # The final state counts its updates.
  assert int(ema.ema_state(history[-1][1]).count) == 3


def test_scheduled_momentum_uses_the_step_count():
  schedule = ema.cosine_momentum(0.5, total_steps=4)
  momenta = [1 - 0.5 * (math.cos(math.pi * t / 4) + 1) / 2 for t in range(3)]
  assert momenta[0] == 0.5
  history = _run(schedule)
  for (_, opt_state), expected, m in zip(history, _reference(momenta),
                                         momenta):
    _assert_tree_close(ema.target_params(opt_state), expected)
    assert float(ema.ema_state(opt_state).momentum) == pytest.approx(m)


def test_cosine_momentum_goes_from_base_to_one():
  schedule = ema.cosine_momentum(0.99, total_steps=100)
  assert float(schedule(0)) == pytest.approx(0.99)
  assert float(schedule(50)) == pytest.approx(0.995)
  assert float(schedule(100)) == pytest.approx(1.0)
  assert float(schedule(150)) == pytest.approx(1.0)  # held after the end


def test_updates_pass_through_and_target_starts_as_a_copy():
  tx = optax.chain(optax.sgd(LR, momentum=0.9), ema.ema_params(0.999))
  plain = optax.sgd(LR, momentum=0.9)
  state, plain_state = tx.init(PARAMS), plain.init(PARAMS)
  _assert_tree_close(ema.target_params(state),
                     {k: np.asarray(v) for k, v in PARAMS.items()})
  for grads in GRADS:
    updates, state = tx.update(grads, state, PARAMS)
    plain_updates, plain_state = plain.update(grads, plain_state, PARAMS)
    for a, b in zip(jax.tree.leaves(updates),
                    jax.tree.leaves(plain_updates)):
      np.testing.assert_array_equal(a, b)


def test_update_needs_params():
  tx = ema.ema_params(0.9)
  with pytest.raises(ValueError, match="needs the params"):
    tx.update(PARAMS, tx.init(PARAMS))


def _config(**overrides):
  c = ml_collections.ConfigDict(dict(
      optimizer="sgd", learning_rate=0.03, lr_scaling="linear",
      batch_size=256, weight_decay=1e-4, momentum=0.9, warmup_epochs=0.0,
      lr_schedule="cosine", ema_momentum=0.99,
      ema_momentum_schedule="constant"))
  c.update(overrides)
  return c


def test_optimizer_factory_chains_the_ema_last():
  tx, _ = optim.create_optimizer_from_config(
      _config(), steps_per_epoch=10, total_steps=100, ema=ema.everything)
  state = tx.init(PARAMS)
  assert ema.has_ema_state(state)
  # The target is read out of the masked-decay + SGD chain.
  _assert_tree_close(ema.target_params(state),
                     {k: np.asarray(v) for k, v in PARAMS.items()})
  updates, state = tx.update(GRADS[0], state, PARAMS)
  new_params = optax.apply_updates(PARAMS, updates)
  for k in PARAMS:
    np.testing.assert_allclose(
        np.asarray(ema.target_params(state)[k]),
        0.99 * np.asarray(PARAMS[k]) + 0.01 * np.asarray(new_params[k]),
        rtol=1e-6)
  cosine, _ = optim.create_optimizer_from_config(
      _config(ema_momentum_schedule="cosine"), steps_per_epoch=10,
      total_steps=100, ema=ema.everything)
  assert ema.has_ema_state(cosine.init(PARAMS))
  # The method asks for the EMA; a config field alone does not add one.
  without, _ = optim.create_optimizer_from_config(
      _config(), steps_per_epoch=10, total_steps=100)
  assert not ema.has_ema_state(without.init(PARAMS))
  with pytest.raises(ValueError, match="found 0"):
    ema.target_params(without.init(PARAMS))


@pytest.mark.parametrize("field,value", [
    ("ema_momentum", 1.5), ("ema_momentum", -0.1),
    ("ema_momentum_schedule", "linear")])
def test_bad_momentum_config_names_the_field(field, value):
  with pytest.raises(ConfigError, match=f"config.{field}="):
    optim.create_optimizer_from_config(
        _config(**{field: value}), steps_per_epoch=10, total_steps=100,
        ema=ema.everything)


def test_a_bool_is_not_a_momentum():
  with pytest.raises(ConfigError, match="config.ema_momentum=True"):
    ema.momentum_schedule(True, "constant", total_steps=100)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "lars"])
def test_frozen_parameters_never_change(optimizer):
  """A method's `frozen` mask holds under every optimizer, decoupled AdamW
  decay included (a stop-gradient alone would still let decay shrink
  them); the EMA target of a frozen leaf stays put too."""
  tx, _ = optim.create_optimizer_from_config(
      _config(optimizer=optimizer, weight_decay=0.1,
              weight_decay_mask="all"),
      steps_per_epoch=10, total_steps=100, ema=ema.everything,
      frozen=lambda p: {"w": True, "b": False})
  params, state = PARAMS, tx.init(PARAMS)
  for grads in GRADS:
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(np.asarray(params["w"]),
                                np.asarray(PARAMS["w"]))
  np.testing.assert_array_equal(np.asarray(ema.target_params(state)["w"]),
                                np.asarray(PARAMS["w"]))
  assert float(params["b"]) != float(PARAMS["b"])


def test_a_selected_ema_follows_only_its_subtrees():
  """BYOL's target: the encoder and projector, never the predictor."""
  params = {"encoder": jnp.ones(3), "head": jnp.ones(2),
            "predictor": jnp.ones(4)}
  tx = optax.chain(optax.sgd(1.0), ema.ema_params(
      0.5, select=lambda p: {k: p[k] for k in ("encoder", "head")}))
  state = tx.init(params)
  assert set(ema.target_params(state)) == {"encoder", "head"}
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = tx.update(grads, state, params)
  # target <- 0.5 * 1 + 0.5 * (1 - 1) = 0.5
  _assert_tree_close(ema.target_params(state),
                     {"encoder": np.full(3, 0.5), "head": np.full(2, 0.5)})
