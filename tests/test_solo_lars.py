"""optimizer='lars_solo' against a NumPy (float64) transcription of
solo-learn's LARS (vturrisi/solo-learn solo/utils/lars.py:112-167 @9187ea3),
which is also apex's LARC around torch's SGD (SimSiam's linear evaluation).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from contrastive_jax import optim, weight_decay
from contrastive_jax.config import checks as config_checks
from contrastive_jax.errors import ConfigError
from tests.test_configs import load


def _solo_learn_lars(params, grads_per_step, lrs_per_step, *, weight_decay,
                     eta, clip_lr, momentum, exclude_bias_n_norm,
                     eps=1e-8):
  """solo/utils/lars.py `LARS.step`, line by line, over several steps: one
  param group per distinct lr (each leaf's lr at each step is given)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  state = {}
  for grads, lrs in zip(grads_per_step, lrs_per_step):
    for k in p:
      lr = lrs[k]
      d_p = np.asarray(grads[k], np.float64)
      p_norm = np.linalg.norm(p[k])
      g_norm = np.linalg.norm(d_p)
      if p[k].ndim != 1 or not exclude_bias_n_norm:          # :140
        if p_norm != 0 and g_norm != 0:                      # :141
          lars_lr = p_norm / (g_norm + p_norm * weight_decay + eps)
          lars_lr *= eta                                     # :142-143
          if clip_lr:                                        # :146-147
            with np.errstate(divide="ignore"):
              lars_lr = min(lars_lr / np.float64(lr), 1)
          d_p = d_p + weight_decay * p[k]                    # :149
          d_p = d_p * lars_lr                                # :150
      if momentum != 0:                                      # :153-163
        if k not in state:
          buf = state[k] = d_p.copy()
        else:
          buf = state[k] = state[k] * momentum + d_p
        d_p = buf
      p[k] = p[k] - lr * d_p                                 # :165
  return p


_SHAPES = {"conv/kernel": (3, 3, 2, 4), "bn/scale": (4,), "bn/bias": (4,),
           "dense/kernel": (4, 3), "dense/bias": (3,)}


def _nest(flat):
  out = {}
  for path, value in flat.items():
    module, leaf = path.split("/")
    out.setdefault(module, {})[leaf] = value
  return out


def _flat(nested):
  return {f"{m}/{leaf}": v for m, leaves in nested.items()
          for leaf, v in leaves.items()}


def _problem(steps):
  rng = np.random.default_rng(0)
  params = {k: rng.normal(size=s) for k, s in _SHAPES.items()}
  # A zero kernel (its first step is plain g: |w| = 0) and a zero bias.
  params["dense/kernel"] = np.zeros(_SHAPES["dense/kernel"])
  params["dense/bias"] = np.zeros(_SHAPES["dense/bias"])
  grads = []
  for _ in range(steps):
    g = {k: rng.normal(size=s) for k, s in _SHAPES.items()}
    # Tiny conv gradients: r = eta |w| / |g| above the lr, so the clip's
    # other branch (min(r / lr, 1) = 1) is taken too.
    g["conv/kernel"] = g["conv/kernel"] * 1e-3
    grads.append(g)
  return params, grads


def _run_ours(tx, params, grads):
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _nest(params))
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads:
    g = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), _nest(g))
    updates, state = update(g, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  return _flat(params)


@pytest.mark.parametrize("clip_lr, eta, wd, adapt", [
    (True, 0.02, 1e-5, "exclude_bn_bias"),   # solo-learn's CIFAR recipes
    (False, 0.02, 1e-5, "exclude_bn_bias"),
    (False, 1e-3, 0.0, "all"),               # SimSiam's linear eval (LARC)
])
def test_lars_solo_matches_solo_learn(clip_lr, eta, wd, adapt):
  steps = 6
  params, grads = _problem(steps)
  # Warmup from 0 (step 0: lr 0, the clip's r / 0 = inf gives 1), then a
  # cosine; the dense leaves in a group of their own at a constant lr (a
  # static_lr group), which their clip divides by.
  schedule = optim.learning_rate_schedule(peak_lr=0.5, total_steps=steps,
                                          warmup_steps=2)
  dense = lambda p: {m: {k: m == "dense" for k in v} for m, v in p.items()}
  tx = optim.create_optimizer(
      name="lars_solo", learning_rate=schedule, weight_decay=wd,
      momentum=0.9, trust_coefficient=eta, clip_lr=clip_lr,
      weight_decay_mask=adapt, adapt_mask=adapt,
      lr_groups=[(dense, 0.1)])
  lrs = [{k: 0.1 if k.startswith("dense") else float(schedule(t))
          for k in _SHAPES} for t in range(steps)]
  want = _solo_learn_lars(params, grads, lrs, weight_decay=wd, eta=eta,
                          clip_lr=clip_lr, momentum=0.9,
                          exclude_bias_n_norm=adapt == "exclude_bn_bias")
  got = _run_ours(tx, params, grads)
  for k in _SHAPES:
    np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-7,
                               err_msg=k)


def test_solo_learn_exclusion_is_our_decay_mask():
  # exclude_bias_n_norm skips ndim-1 leaves (lars.py:140): on a network our
  # decay_mask marks exactly the leaves with ndim > 1.
  params = _nest({k: np.zeros(s) for k, s in _SHAPES.items()})
  mask = _flat(weight_decay.decay_mask(params))
  assert mask == {k: len(s) != 1 for k, s in _SHAPES.items()}


def test_lars_solo_clip_steps_each_leaf_at_most_lr():
  # With the clip, a leaf's first step is lr * min(r / lr, 1) g = min(r,
  # lr) g: never longer than plain SGD's.
  params = {"conv": {"kernel": jnp.ones((2, 2))}}
  grads = {"conv": {"kernel": jnp.full((2, 2), 1e-6)}}
  tx = optim.create_optimizer(name="lars_solo", learning_rate=0.5,
                              weight_decay=0.0, trust_coefficient=0.02,
                              clip_lr=True)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["conv"]["kernel"], -0.5 * 1e-6,
                             rtol=1e-5)


def _config(**fields):
  # type_safe=False: a wrong type reaches the check, as from a JSON file.
  c = ml_collections.ConfigDict(load("byol", "cifar10").to_dict(),
                                type_safe=False)
  c.update(fields)
  return c


@pytest.mark.parametrize("fields, message", [
    (dict(lars_eta=0.0), r"config.lars_eta=0.0 is invalid"),
    (dict(lars_clip_lr=1), r"config.lars_clip_lr=1 is invalid"),
    (dict(optimizer="lars", lars_clip_lr=True),
     r"lars_clip_lr=True .* needs optimizer='lars_solo'"),
    (dict(lars_adapt_mask="bias"), r"lars_adapt_mask must be one of"),
])
def test_lars_fields_are_checked(fields, message):
  with pytest.raises(ConfigError, match=message):
    config_checks.validate(_config(**fields), num_devices=1, num_processes=1)


def test_lars_state_is_unchanged_by_the_new_fields():
  # The 'lars' chain (and so old checkpoints) is the one optim.lars builds.
  params = {"conv": {"kernel": jnp.ones((2, 2))}, "bn": {"scale": jnp.ones(2)}}
  built = optim.create_optimizer(name="lars", learning_rate=0.1,
                                 weight_decay=1e-6)
  direct = optim.lars(0.1, weight_decay=1e-6, trust_coefficient=1e-3,
                      momentum=0.9, nesterov=False)
  assert (jax.tree.structure(built.init(params))
          == jax.tree.structure(direct.init(params)))
