"""Barlow Twins (Zbontar et al. 2021): one encoder and projector for both
views, the cross-correlation of their standardised projections over the
global batch pushed to the identity.

Reference: facebookresearch/barlowtwins @8e8d284 (the README table cites
each number's line). The network and step are `joint_embedding`'s; this
module adds the objective and the optimizer's second parameter group.

- objective: `config.loss_scale` x `losses.barlow_twins_loss` with
  lambda = `config.off_diagonal_weight`. The reference's gradient is its
  loss's divided by its number of GPUs: it sums c over GPUs with
  `torch.distributed.all_reduce` (main.py:216), which autograd does not
  see, so each GPU back-propagates only its own rows' share of the global
  loss, and DDP then averages those shares (facebookresearch/barlowtwins
  issue #8; lightly-ai/lightly issue #1977). `loss_scale` 1/16 reproduces
  its update on the 16 GPUs it was trained on (README.md:60): LARS makes
  the weights' steps nearly scale-free, but the biases' and BN's (no trust
  ratio) are proportional to it.
- optimizer: the reference's two parameter groups (main.py:90-97): every
  1-D parameter (biases, BN scales and offsets) at `bias_learning_rate`,
  the rest at `learning_rate`, both on the same schedule (main.py:167-168).
  `optimizer` chains a constant factor onto those leaves' updates, after
  the momentum: equal to a group learning rate, since momentum is linear.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive_jax import losses, optim
from contrastive_jax.methods import joint_embedding


def objective(z1, z2, *, config, axis_name):
  terms = losses.barlow_twins_loss(z1, z2, lambd=config.off_diagonal_weight,
                                   axis_name=axis_name)
  # `loss` is what the step optimises; `barlow_twins_loss` the paper's, as
  # the reference logs it.
  return config.loss_scale * terms.loss, {
      "barlow_twins_loss": terms.loss, "on_diagonal": terms.on_diagonal,
      "off_diagonal": terms.off_diagonal}


def bias_and_norm(params):
  """The reference's second group: every 1-D parameter (`param.ndim == 1`,
  main.py:93), the online probe's apart (it has its own learning rate)."""
  return {k: jax.tree.map(lambda p, k=k: k != "probe" and jnp.ndim(p) == 1, v)
          for k, v in params.items()}


def optimizer(config: ml_collections.ConfigDict, *, steps_per_epoch: int,
              total_steps: int, requests: optim.Requests) -> optim.Optimizer:
  """The config's optimizer, with the biases and BN parameters at
  `bias_learning_rate` (scaled and scheduled as `learning_rate`): their
  updates times bias_learning_rate / learning_rate. The second schedule is
  logged as `bias_learning_rate`."""
  built = optim.optimizer_from_config(
      config, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      requests=requests)
  ratio = config.bias_learning_rate / config.learning_rate
  tx = optax.chain(built.tx, optax.masked(optax.scale(ratio), bias_and_norm))
  schedule = built.learning_rate
  return optim.Optimizer(
      tx=tx, learning_rate=schedule,
      schedules={**built.schedules,
                 "bias_learning_rate": lambda step: schedule(step) * ratio})


METHOD = joint_embedding.method(
    "barlow_twins", objective, title="Barlow Twins",
    positive=("loss_scale", "bias_learning_rate"),
    non_negative=("off_diagonal_weight",), optimizer=optimizer)
