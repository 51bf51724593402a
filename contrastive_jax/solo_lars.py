"""solo-learn's LARS (`optimizer='lars_solo'`), which is apex's LARC wrapped
around torch's SGD.

vturrisi/solo-learn solo/utils/lars.py:135-165 @9187ea3, for each leaf with
a gradient:
  r = eta * |w| / (|g| + wd * |w| + eps), eps 1e-8 (:79, :142-143), when
    both norms are non-zero and the leaf is adapted (:140-141);
  with `clip_lr`, r = min(r / lr, 1) (:146-147), lr the leaf's group's
    learning rate at this step;
  d = (g + wd * w) * r (:149-150); a leaf not adapted, or with a zero norm,
    keeps d = g, without weight decay;
  buf = mu * buf + d; p -= lr * buf (:153-165): the learning rate after the
    momentum, as torch's SGD.
apex's LARC (apex/parallel/LARC.py `step`), which SimSiam's linear
evaluation wraps around torch's SGD (simsiam main_lincls.py:226-232
@a7bc177), computes the same r and d for every leaf with a gradient.

optim.lars (SimCLR's, BYOL's, MoCo v3's) differs in three ways: no eps, no
clip, and the learning rate inside the momentum.
"""

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

EPS = 1e-8  # solo/utils/lars.py:79; apex LARC's default eps.


class SoloTrustRatioState(NamedTuple):
  count: jax.Array  # int32: updates seen, the step the schedules read


def _value(value_or_schedule, step):
  return value_or_schedule(step) if callable(value_or_schedule) else (
      value_or_schedule)


def scale_by_solo_trust_ratio(
    *, eta: float, weight_decay, clip_lr: bool, learning_rate,
    adapt_mask: Callable[[Any], Any], wd_mask: Callable[[Any], Any],
    lr_groups: Sequence[tuple[Callable[[Any], Any], Any]] = (),
) -> optax.GradientTransformation:
  """The gradient each leaf's momentum receives: (g + wd w) r on the leaves
  `adapt_mask` marks (wd 0 on those `wd_mask` does not mark: a param group
  with weight_decay 0), g elsewhere. `weight_decay`, `learning_rate` and
  the learning rates of `lr_groups` (mask_fn, lr) may be schedules; the
  clip divides by each leaf's own."""

  def init_fn(params):
    del params
    return SoloTrustRatioState(count=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError('scale_by_solo_trust_ratio needs the params')
    step = state.count
    wd = jnp.asarray(_value(weight_decay, step), jnp.float32)
    lrs = jax.tree.map(lambda _: _value(learning_rate, step), params)
    for mask_fn, group_lr in lr_groups:
      lr = _value(group_lr, step)
      lrs = jax.tree.map(lambda old, m, lr=lr: lr if m else old, lrs,
                         mask_fn(params))

    def scale(g, w, adapted, decayed, lr):
      if not adapted:
        return g
      leaf_wd = wd if decayed else jnp.zeros((), jnp.float32)
      w_norm = jnp.linalg.norm(w.astype(jnp.float32))
      g_norm = jnp.linalg.norm(g.astype(jnp.float32))
      ratio = eta * w_norm / (g_norm + leaf_wd * w_norm + EPS)
      if clip_lr:
        # lr 0 (a warmup's first step): r / 0 is inf, clipped to 1.
        ratio = jnp.minimum(ratio / lr, 1.0)
      both = jnp.logical_and(w_norm != 0.0, g_norm != 0.0)
      scaled = ((g + leaf_wd.astype(g.dtype) * w) * ratio.astype(g.dtype))
      return jnp.where(both, scaled, g)

    updates = jax.tree.map(scale, updates, params, adapt_mask(params),
                           wd_mask(params), lrs)
    return updates, SoloTrustRatioState(count=optax.safe_increment(step))

  return optax.GradientTransformation(init_fn, update_fn)
