"""Tests for the optimizer factory against hand-computed NumPy (float64)."""

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from contrastive_jax import optim, weight_decay
from contrastive_jax.errors import ConfigError
from contrastive_jax.models import ProjectionHead, create_encoder

# ------------------------------------------------------------ LR scaling --


def test_simclr_imagenet_learning_rates():
  assert optim.scaled_learning_rate(0.3, 4096, 'linear') == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.075, 4096, 'sqrt') == pytest.approx(4.8)
  assert optim.scaled_learning_rate(0.03, 256, 'none') == 0.03
  assert optim.scaled_learning_rate(0.1, 512, 'linear') == pytest.approx(0.2)


# ------------------------------------------------------------- schedules --


def _values(schedule, steps):
  return [float(schedule(s)) for s in steps]


def test_cosine_schedule_warms_up_then_decays_to_zero():
  schedule = optim.learning_rate_schedule(
      peak_lr=4.8, total_steps=1000, warmup_steps=100)
  start, mid_warmup, peak, mid_decay, end = _values(
      schedule, [0, 50, 100, 550, 1000])
  assert start == 0.0
  assert mid_warmup == pytest.approx(2.4)
  assert peak == pytest.approx(4.8)
  assert mid_decay == pytest.approx(2.4, rel=1e-5)  # cos(pi/2) half-way
  assert end == pytest.approx(0.0, abs=1e-6)


def test_cosine_schedule_without_warmup_starts_at_peak():
  schedule = optim.learning_rate_schedule(
      peak_lr=1.0, total_steps=10, warmup_steps=0)
  assert _values(schedule, [0, 10]) == pytest.approx([1.0, 0.0], abs=1e-6)


def test_step_schedule_like_moco_v1():
  steps_per_epoch = 5004
  schedule = optim.learning_rate_schedule(
      peak_lr=0.03, total_steps=200 * steps_per_epoch, warmup_steps=0,
      schedule='step',
      decay_boundaries=(120 * steps_per_epoch, 160 * steps_per_epoch))
  b1, b2 = 120 * steps_per_epoch, 160 * steps_per_epoch
  assert _values(schedule, [0, b1 - 1, b1, b2 - 1, b2, 200 * steps_per_epoch]
                 ) == pytest.approx([0.03, 0.03, 3e-3, 3e-3, 3e-4, 3e-4])


def test_step_schedule_boundaries_stay_absolute_after_warmup():
  schedule = optim.learning_rate_schedule(
      peak_lr=1.0, total_steps=100, warmup_steps=10, schedule='step',
      decay_boundaries=(50, 80), decay_factor=0.5)
  assert _values(schedule, [0, 5, 10, 49, 50, 79, 80]) == pytest.approx(
      [0.0, 0.5, 1.0, 1.0, 0.5, 0.5, 0.25])


def test_constant_schedule_with_and_without_warmup():
  warm = optim.learning_rate_schedule(
      peak_lr=2.0, total_steps=100, warmup_steps=10, schedule='constant')
  assert _values(warm, [0, 5, 10, 99]) == pytest.approx([0.0, 1.0, 2.0, 2.0])
  flat = optim.learning_rate_schedule(
      peak_lr=2.0, total_steps=100, warmup_steps=0, schedule='constant')
  assert _values(flat, [0, 99]) == pytest.approx([2.0, 2.0])


# ------------------------------------------------------------ decay mask --


def _expected_mask(params):
  """Independent of the path rule: in our models only kernels are decayed,
  and every other leaf is a bias or a BatchNorm scale."""
  flat = traverse_util.flatten_dict(params)
  for path in flat:
    assert path[-1] in ('kernel', 'bias', 'scale'), path
  return {path: path[-1] == 'kernel' for path in flat}


def _assert_mask_matches(params):
  mask = weight_decay.decay_mask(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  got = traverse_util.flatten_dict(mask)
  assert got == _expected_mask(params)
  return got


def test_decay_mask_on_tiny_resnet_and_heads():
  def init(model, x):
    return model.init(jax.random.key(0), x, train=False)['params']

  # Same shapes as test_models, so a shared session reuses compiled ops.
  params = {
      'encoder': init(create_encoder('tiny_resnet', cifar_stem=True),
                      jnp.ones((4, 16, 16, 3))),
      'head_v1': init(ProjectionHead(num_layers=2), jnp.ones((4, 16))),
      'head_v2': init(ProjectionHead(num_layers=3, use_bn=True),
                      jnp.ones((4, 16))),
  }
  got = _assert_mask_matches(params)
  excluded = {path for path, decay in got.items() if not decay}
  # Spot-check each kind of excluded leaf is really there.
  assert ('encoder', 'stem_bn', 'scale') in excluded
  assert ('encoder', 'stage2_block1', 'proj_bn', 'bias') in excluded
  assert ('head_v1', 'dense1', 'bias') in excluded
  assert ('head_v2', 'bn_out', 'scale') in excluded
  assert got[('head_v2', 'dense3', 'kernel')]


def test_decay_mask_on_abstract_resnet18():
  model = create_encoder('resnet18')
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)),
                         train=False))
  got = _assert_mask_matches(variables['params'])
  # Stem + 16 block convs + 3 projections; each conv has a BN (scale, bias).
  assert sum(got.values()) == 20
  assert sum(not decay for decay in got.values()) == 40


def test_decay_mask_recognises_flax_default_names_only_by_token():
  class Mixed(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Dense(3)(x)                                  # Dense_0
      x = nn.BatchNorm(use_running_average=True)(x)       # BatchNorm_0
      return nn.Dense(3, use_bias=False, name='bnet')(x)  # not a BN

  params = Mixed().init(jax.random.key(0), jnp.ones((2, 3)))['params']
  got = traverse_util.flatten_dict(weight_decay.decay_mask(params))
  assert got == {
      ('Dense_0', 'kernel'): True, ('Dense_0', 'bias'): False,
      ('BatchNorm_0', 'scale'): False, ('BatchNorm_0', 'bias'): False,
      ('bnet', 'kernel'): True,
  }


# ------------------------------------------------------------ optimizers --

LR, WD, MOMENTUM = 0.5, 0.1, 0.9


def _toy_problem():
  """A kernel, a bias and a BN scale, with two steps of gradients."""
  rng = np.random.default_rng(0)
  params = {
      'conv': {'kernel': rng.normal(size=(3, 2))},
      'dense': {'bias': rng.normal(size=(2,))},
      'bn1': {'scale': rng.normal(size=(2,))},
  }
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape), params)
           for _ in range(2)]
  return params, grads


def _run(tx, params, grads):
  """Applies `tx` for len(grads) steps in float32; returns the params."""
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads:
    g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g)
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


def _numpy_momentum(params, grads, direction):
  """w <- w + v,  v <- momentum * v - LR * direction(w, g), per leaf."""
  out = {}
  for module, leaves in params.items():
    out[module] = {}
    for leaf, w in leaves.items():
      v = np.zeros_like(w)
      for g in grads:
        v = MOMENTUM * v - LR * direction(leaf, w, g[module][leaf])
        w = w + v
      out[module][leaf] = w
  return out


def _assert_tree_close(got, expected):
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      got, expected)


def test_lars_matches_numpy():
  eta = 0.02
  params, grads = _toy_problem()

  def direction(leaf, w, g):
    if leaf != 'kernel':  # bias and BN: plain momentum SGD, no decay
      return g
    d = g + WD * w
    return eta * np.linalg.norm(w) / np.linalg.norm(d) * d

  tx = optim.create_optimizer(
      name='lars', learning_rate=LR, weight_decay=WD, momentum=MOMENTUM,
      trust_coefficient=eta)
  _assert_tree_close(_run(tx, params, grads),
                     _numpy_momentum(params, grads, direction))


def test_sgd_is_torch_sgd_with_masked_l2_decay():
  params, grads = _toy_problem()

  def direction(leaf, w, g):
    return g + WD * w if leaf == 'kernel' else g

  tx = optim.create_optimizer(
      name='sgd', learning_rate=LR, weight_decay=WD, momentum=MOMENTUM)
  _assert_tree_close(_run(tx, params, grads),
                     _numpy_momentum(params, grads, direction))


def test_adamw_decays_only_masked_leaves():
  params, grads = _toy_problem()
  zero_grads = [jax.tree.map(np.zeros_like, grads[0])]
  tx = optim.create_optimizer(name='adamw', learning_rate=LR, weight_decay=WD)
  got = _run(tx, params, zero_grads)
  # With zero gradients Adam's step is 0; only decoupled decay moves weights.
  expected = jax.tree.map(np.copy, params)
  expected['conv']['kernel'] = params['conv']['kernel'] * (1 - LR * WD)
  _assert_tree_close(got, expected)


# ---------------------------------------------------------------- config --


def _config(**overrides):
  config = ml_collections.ConfigDict(dict(
      optimizer='lars', learning_rate=0.3, lr_scaling='linear',
      batch_size=4096, weight_decay=1e-6, momentum=0.9, warmup_epochs=10.0,
      lr_schedule='cosine', lr_decay_epochs=(), lr_decay_factor=0.1))
  config.update(overrides)
  return config


def test_config_simclr_imagenet():
  tx, schedule = optim.create_optimizer_from_config(
      _config(), steps_per_epoch=312, total_steps=100 * 312)
  assert _values(schedule, [0, 3120, 31200]) == pytest.approx(
      [0.0, 4.8, 0.0], abs=1e-6)
  params, grads = _toy_problem()
  _run(tx, params, grads[:1])  # builds and steps with a schedule


def test_config_moco_v1_and_fractional_warmup():
  _, schedule = optim.create_optimizer_from_config(
      _config(optimizer='sgd', learning_rate=0.03, lr_scaling='none',
              batch_size=256, weight_decay=1e-4, warmup_epochs=0.0,
              lr_schedule='step', lr_decay_epochs=(120, 160)),
      steps_per_epoch=10, total_steps=2000)
  assert _values(schedule, [0, 1199, 1200, 1600]) == pytest.approx(
      [0.03, 0.03, 3e-3, 3e-4])
  _, schedule = optim.create_optimizer_from_config(
      _config(warmup_epochs=0.5, lr_schedule='constant', batch_size=256),
      steps_per_epoch=10, total_steps=100)
  assert _values(schedule, [0, 4, 5]) == pytest.approx([0.0, 0.24, 0.3])


# ---------------------------------------------------------------- errors --


@pytest.mark.parametrize('call,field,allowed', [
    (lambda: optim.scaled_learning_rate(0.1, 256, 'cubic'),
     'lr_scaling', 'linear, sqrt, none'),
    (lambda: optim.create_optimizer(
        name='adam', learning_rate=0.1, weight_decay=0.0),
     'optimizer', 'lars, lars_solo, sgd, adamw'),
    (lambda: optim.create_optimizer(
        name='sgd', learning_rate=0.0, weight_decay=0.0),
     'learning_rate', 'positive'),
    (lambda: optim.create_optimizer(
        name='lars', learning_rate=-1.0, weight_decay=0.0),
     'learning_rate', 'positive'),
    (lambda: optim.create_optimizer(
        name='sgd', learning_rate=0.1, weight_decay=-1e-4),
     'weight_decay', '>= 0'),
    (lambda: optim.create_optimizer(
        name='sgd', learning_rate=0.1, weight_decay=0.0, momentum=1.0),
     'momentum', '[0, 1)'),
    (lambda: optim.learning_rate_schedule(
        peak_lr=1.0, total_steps=10, warmup_steps=0, schedule='linear'),
     'lr_schedule', 'cosine, step, constant'),
    (lambda: optim.learning_rate_schedule(
        peak_lr=1.0, total_steps=10, warmup_steps=10),
     'warmup_epochs', 'shorter than the run'),
    (lambda: optim.learning_rate_schedule(
        peak_lr=1.0, total_steps=10, warmup_steps=2, schedule='step',
        decay_boundaries=(6, 4)),
     'lr_decay_epochs', 'increasing'),
    # The validation layer's check of the config's choices.
    (lambda: optim.check_config(_config(optimizer='adam')), 'optimizer',
     'lars, lars_solo, sgd, adamw'),
    (lambda: optim.check_config(_config(lr_schedule='linear')),
     'lr_schedule', 'cosine, step, constant'),
    (lambda: optim.check_config(_config(lr_scaling='cubic')), 'lr_scaling',
     'linear, sqrt, none'),
    (lambda: optim.check_config(_config(weight_decay_mask='bn')),
     'weight_decay_mask', 'exclude_bn_bias, all'),
    (lambda: optim.check_config(_config(lr_schedule='step',
                                        lr_decay_factor=-0.5)),
     'lr_decay_factor', '>= 0'),
])
def test_errors_name_the_field(call, field, allowed):
  with pytest.raises(ConfigError) as error:
    call()
  message = str(error.value)
  assert message.startswith(field) and allowed in message
  assert '\n' not in message


# --- weight_decay_mask (issue 13) ---------------------------------------

def test_weight_decay_mask_all_decays_bn_and_biases():
  params = {'encoder': {'stem_conv': {'kernel': 1.0},
                        'stem_bn': {'scale': 1.0, 'bias': 1.0}},
            'head': {'dense1': {'kernel': 1.0, 'bias': 1.0}}}
  every = optim.weight_decay_mask_fn('all')(params)
  assert all(jax.tree.leaves(every))
  some = optim.weight_decay_mask_fn('exclude_bn_bias')(params)
  assert some == {'encoder': {'stem_conv': {'kernel': True},
                              'stem_bn': {'scale': False, 'bias': False}},
                  'head': {'dense1': {'kernel': True, 'bias': False}}}
  # torch SGD: g + wd * w on every parameter, then lr, no momentum here.
  tx = optim.create_optimizer(name='sgd', learning_rate=0.1,
                              weight_decay=0.5, momentum=0.0,
                              weight_decay_mask='all')
  grads = jax.tree.map(lambda _: 0.0, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert all(u == pytest.approx(-0.05) for u in jax.tree.leaves(updates))
  with pytest.raises(ConfigError, match='weight_decay_mask'):
    optim.create_optimizer(name='sgd', learning_rate=0.1, weight_decay=0.5,
                           weight_decay_mask='none')


def test_no_decay_leaves_get_plain_momentum_sgd_under_lars():
  """SimCLR's exclude_from_weight_decay: a `no_decay` leaf (the supervised
  head) gets neither decay nor the trust ratio, so its first update is
  -lr * g; the others keep both."""
  params = {"linear": {"kernel": jnp.full((2, 2), 3.0)},
            "encoder": {"kernel": jnp.full((2, 2), 3.0)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  tx = optim.create_optimizer(
      name="lars", learning_rate=0.1, weight_decay=0.01, momentum=0.9,
      no_decay=lambda p: {"linear": {"kernel": True},
                          "encoder": {"kernel": False}})
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["linear"]["kernel"], -0.1 * 0.5)
  g = 0.5 + 0.01 * 3.0  # decay added, then the trust ratio |w| / |g|
  np.testing.assert_allclose(updates["encoder"]["kernel"],
                             -0.1 * g * 0.001 * 3.0 / g, rtol=1e-6)
