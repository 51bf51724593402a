"""A method's model, optimizer, state initialiser and jitted train step for a
mesh, built from a config: what train.py runs, the benchmarks time and the
tests call. Imports no TensorFlow (the data pipeline is not built here)."""

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections
import optax

from contrastive_jax import guards, methods, parallel, step_context
from contrastive_jax.config import lib as config_lib
from contrastive_jax.data import device_augment, view_spec


@dataclasses.dataclass(frozen=True)
class MethodSteps:
  method: methods.Method
  model: Any
  tx: optax.GradientTransformation
  learning_rate_fn: Callable
  # What every step is given of the run: step counts and schedules.
  context: step_context.StepContext
  mesh: jax.sharding.Mesh
  init: Callable             # rng -> state, created replicated on the mesh
  # method.train_step with its arguments bound, after `augment` when set.
  per_device_step: Callable
  # jit(shard_map(step)), the step inside guards.skip_nonfinite when built
  # with guard=True; donates the input state.
  train_step: Callable
  # config.augment_on_device: the per-device batch -> the batch with its
  # views augmented (device_augment.batch_augmenter); else None.
  augment: Callable | None = None

  def abstract_state(self):
    """The state as ShapeDtypeStructs in its (replicated) sharding."""
    sharding = parallel.replicated(self.mesh)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(self.init, jax.random.PRNGKey(0)))


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
          steps_per_epoch: int, total_steps: int,
          guard: bool = True) -> MethodSteps:
  """The pieces of `config.method` on `mesh`; the step counts set the
  learning-rate (and EMA) schedules. guard=False leaves out the non-finite
  guard."""
  method = methods.get_method(config.method)
  optimizer = method.optimizer(
      config, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      requests=method.optimizer_requests)
  tx, learning_rate_fn = optimizer.tx, optimizer.learning_rate
  context = step_context.StepContext(
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      learning_rate=learning_rate_fn, schedules=optimizer.schedules)
  model = method.create_model(config, axis_name=parallel.DATA_AXIS)
  init = jax.jit(
      functools.partial(method.init_state, model=model, tx=tx, config=config),
      out_shardings=parallel.replicated(mesh))
  per_device_step = functools.partial(
      method.train_step, model=model, tx=tx, config=config,
      context=context, axis_name=parallel.DATA_AXIS)
  augment = None
  if config_lib.value(config, "augment_on_device"):
    views = view_spec.training_views(config, method.num_views,
                                     method.extra_views)
    augment = device_augment.batch_augmenter(
        [spec for _, spec in views], [field for field, _ in views])
    per_device_step = _after(augment, per_device_step)
  else:
    per_device_step = _without_uniforms(per_device_step)
  step = per_device_step
  if guard:
    step = guards.skip_nonfinite(step, axis_name=parallel.DATA_AXIS)
  return MethodSteps(
      method=method, model=model, tx=tx, learning_rate_fn=learning_rate_fn,
      context=context,
      mesh=mesh, init=init, per_device_step=per_device_step,
      train_step=parallel.shard_train_step(step, mesh), augment=augment)


def _after(augment, per_device_step):
  """The step on the augmented batch. Inside shard_map, so each device
  augments only its own examples, and the host ships un-augmented crops
  and a few uniforms per view."""

  def step(state, batch):
    return per_device_step(state, augment(batch))
  return step


def _without_uniforms(per_device_step):
  """Refuses, when traced, a batch of a stream made with
  augment_on_device=True: the step would train on the bare crops."""

  def step(state, batch):
    if isinstance(batch, dict) and any(key.startswith("uniforms")
                                       for key in batch):
      raise ValueError("the batch holds uniforms (a stream made with "
                       "augment_on_device=True) but config.augment_on_device "
                       "is off: set both from the same config field")
    return per_device_step(state, batch)
  return step
