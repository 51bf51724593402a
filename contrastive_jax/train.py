"""The pretraining loop. It only orchestrates: the method module owns the
model, state and step; the pipeline owns the data; checkpointing, metrics and
parallelism live in their own modules."""

import functools
import os

import jax
import ml_collections
from absl import logging

from contrastive_jax import (checkpointing, config_checks, evaluation, guards,
                             hooks, method_steps, methods, metric_logging,
                             parallel)
from contrastive_jax import preemption as preemption_lib
from contrastive_jax.data import datasets, order, pipeline
from contrastive_jax.errors import UserError
from contrastive_jax.train_state import TrainState


def steps_for(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(steps per epoch, total steps) for the global batch size."""
  num_examples = datasets.num_examples(config.dataset, config.train_split,
                                       data_dir=config.data_dir)
  steps_per_epoch = order.steps_per_epoch(num_examples, config.batch_size)
  if config.num_train_steps > 0:
    return steps_per_epoch, int(config.num_train_steps)
  return steps_per_epoch, max(1, int(config.num_epochs * steps_per_epoch))


def _prepare_workdir(workdir: str):
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create workdir {workdir}: {e.strerror}") from e
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise UserError(f"workdir {workdir} is not writable")


def _view_specs(config, num_views: int) -> tuple[str, ...]:
  specs = (config.view_augment, config.view_augment_2 or config.view_augment)
  return specs[:num_views]


def _final_evaluation(state, *, method, model, config, mesh, writer,
                      workdir):
  """Classifier accuracy on the eval split -> TensorBoard and
  eval_results.json."""
  results = evaluation.evaluate_classifier(
      state, config=config, mesh=mesh,
      eval_step=functools.partial(method.eval_step, model=model,
                                  config=config,
                                  axis_name=parallel.DATA_AXIS))
  step = int(jax.device_get(state.step))
  writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
  results.update(
      step=step, split=config.eval_split, dataset=config.dataset,
      pretrained=config.get("pretrained"),
      checkpoint_step=int(jax.device_get(state.extra["pretrained_step"])))
  evaluation.write_results(workdir, results)
  logging.info("%s on %s: top-1 %.4f, top-5 %.4f (%d examples)",
               config.method, config.eval_split, results["top1"],
               results["top5"], results["num_examples"])


def _train_loop(state, batches, *, train_step, mesh, start_step, total_steps,
                config, ckpt, writer, step_hooks, monitor):
  """Steps start_step+1..total_steps. Returns (state, whether it stopped
  early for a preemption, after saving that step)."""
  nonfinite = guards.ConsecutiveNonFinite(
      config.get("max_consecutive_nonfinite", 10))
  preemption = preemption_lib.Preemption()
  window = []
  try:
    for step in range(start_step + 1, total_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = parallel.global_batch(next(batches), mesh)
        state, step_metrics = train_step(state, batch)
      nonfinite.observe(step, step_metrics)
      window.append(step_metrics)
      for hook in step_hooks:
        hook(step)
      if step % config.log_every_steps == 0 or step == total_steps:
        writer.write_scalars(step, metric_logging.summarize(window))
        window = []
      if monitor and monitor.due(step, total_steps):
        writer.write_scalars(step, monitor(state))
      stop = preemption.reached(step)
      if stop or step == total_steps:
        nonfinite.flush()  # No final save after a fatal streak.
      ckpt.save(step, state, config,
                force=stop or step == total_steps)
      if stop:
        if window:
          writer.write_scalars(step, metric_logging.summarize(window))
        ckpt.wait()
        logging.warning("Preempted: saved step %d of %d in %s; rerun the "
                        "same command to resume", step, total_steps,
                        ckpt.directory)
        return state, True
  except guards.NonFiniteError:
    ckpt.wait()  # A save in flight completes; nothing is deleted.
    raise
  finally:
    preemption.close()
  ckpt.wait()
  return state, False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices=None) -> TrainState:
  """Pretrains `config.method`; resumes from the latest checkpoint in workdir.

  `devices` (default: all) is the data-parallel mesh. Returns the final state.
  """
  mesh = parallel.make_data_mesh(devices)
  # Everything that can reject the config runs before the workdir is touched.
  config_checks.validate(config, num_devices=mesh.size,
                         num_processes=jax.process_count())
  method = methods.get_method(config.method)
  if config.download:
    if jax.process_count() > 1:
      raise UserError("config.download=True works in single-process runs "
                      "only: prepare the data once with `tfds build` first")
    datasets.download_and_prepare(config.dataset, config.data_dir)
  steps_per_epoch, total_steps = steps_for(config)
  built = method_steps.build(config, mesh, steps_per_epoch=steps_per_epoch,
                             total_steps=total_steps)
  model = built.model
  make_train_ds = pipeline.pretrain_stream(
      dataset=config.dataset, split=config.train_split,
      data_dir=config.data_dir,
      local_batch_size=config.batch_size // jax.process_count(),
      view_specs=_view_specs(config, getattr(method, "NUM_VIEWS", 2)),
      seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  _prepare_workdir(workdir)

  logging.info("%d devices over %d processes; %d steps (%d per epoch)",
               mesh.size, jax.process_count(), total_steps,
               steps_per_epoch)
  with jax.set_mesh(mesh):
    rng = jax.random.PRNGKey(config.seed)
    ckpt = checkpointing.Checkpointer(
        workdir, save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints,
        asynchronous=config.async_checkpointing)
    if ckpt.latest_step() is not None:
      state = ckpt.restore(built.abstract_state())
      logging.info("Resumed from %s at step %d", ckpt.directory,
                   int(state.step))
    else:
      # Created directly into its (replicated) sharding.
      state = built.init(rng)
      if hasattr(method, "warm_start"):  # e.g. a pretrained encoder
        state = method.warm_start(state, config=config)
    start_step = int(jax.device_get(state.step))
    if start_step >= total_steps:
      logging.info("Training is done: the checkpoint is at step %d of %d.",
                   start_step, total_steps)

    train_step = built.train_step
    writer = metric_logging.create_writer(workdir)
    if start_step == 0:
      writer.write_hparams(dict(config.to_dict()))
      hooks.write_start_summaries(config, writer)
    step_hooks = hooks.create_hooks(config, workdir=workdir, writer=writer,
                                    total_steps=total_steps)
    monitor = evaluation.create_monitor(config, method=method, mesh=mesh)

    # The stream starts at the resumed step: nothing is replayed.
    batches = pipeline.as_numpy_iterator(make_train_ds(start_step))
    state, preempted = _train_loop(
        state, batches, train_step=train_step, mesh=mesh,
        start_step=start_step, total_steps=total_steps, config=config,
        ckpt=ckpt, writer=writer, step_hooks=step_hooks, monitor=monitor)
    if preempted:
      writer.flush()
      writer.close()
      ckpt.close()
      return state
    if hasattr(method, "eval_step"):
      _final_evaluation(state, method=method, model=model, config=config,
                        mesh=mesh, writer=writer, workdir=workdir)
    writer.flush()
    writer.close()
    ckpt.close()
  return state
