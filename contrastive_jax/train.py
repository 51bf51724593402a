"""The pretraining loop. It only orchestrates: the method module owns the
model, state and step; the pipeline owns the data; checkpointing, metrics and
parallelism live in their own modules."""

import copy
import os

import jax
import ml_collections
from absl import logging

from contrastive_jax import (checkpointing, guards, hooks, method_steps,
                             methods, metric_logging, parallel)
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.evaluation import evaluators as evaluators_lib
from contrastive_jax import preemption as preemption_lib
from contrastive_jax.data import (label_subset, order, pipeline, sources,
                                  view_spec)
from contrastive_jax.errors import ConfigError, DataError, UserError
from contrastive_jax.train_state import TrainState
from contrastive_jax import workdir_lock  # pylint: disable=g-bad-import-order


def steps_for(config: ml_collections.ConfigDict,
              num_examples: int) -> tuple[int, int]:
  """(steps per epoch, total steps) for the global batch size, on a train
  split of `num_examples`."""
  steps_per_epoch = order.steps_per_epoch(num_examples, config.batch_size)
  if config.num_train_steps > 0:
    return steps_per_epoch, int(config.num_train_steps)
  return steps_per_epoch, max(1, int(config.num_epochs * steps_per_epoch))


def _prepare_workdir(workdir: str):
  """Makes the workdir and takes its lock (process 0; workdir_lock.py): a
  second run on the same workdir stops here, before writing anything. The
  lock is released when `train_and_evaluate` returns or raises."""
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  from jax.experimental import multihost_utils
  # pylint: enable=g-import-not-at-top
  workdir = os.fspath(workdir)
  remote = "://" in workdir
  try:
    if remote:
      tf.io.gfile.makedirs(workdir)
    else:
      os.makedirs(workdir, exist_ok=True)
  except (OSError, tf.errors.OpError) as e:
    why = getattr(e, "strerror", None) or getattr(e, "message", None) or e
    raise UserError(f"cannot create workdir {workdir}: {why}") from e
  if not remote and not os.access(workdir, os.W_OK | os.X_OK):
    raise UserError(f"workdir {workdir} is not writable")
  error = None
  if jax.process_index() == 0:
    try:
      workdir_lock.acquire(workdir)
    except UserError as e:
      error = e
  if jax.process_count() > 1:
    # The others stop too, rather than wait for process 0 in a collective.
    if not int(multihost_utils.broadcast_one_to_all(np.int32(error is None))):
      error = error or UserError(
          f"process 0 could not take the lock of workdir {workdir}; its log "
          "says why")
  if error is not None:
    raise error


def fit_config_to_data(config: ml_collections.ConfigDict, method,
                       source: sources.Source) -> ml_collections.ConfigDict:
  """A copy of `config` whose class count is the train split's.

  num_classes=-1 means "the dataset's"; another value must agree with it.
  On unlabelled data the online probe switches off (saying so once), and a
  method that needs labels (linear evaluation, finetuning) stops with one
  line.
  """
  config = copy.deepcopy(config)
  if source.labelled:
    if config.num_classes == -1:
      config.num_classes = source.num_classes
    elif config.num_classes != source.num_classes:
      raise ConfigError(
          f"config.num_classes={config.num_classes} but dataset "
          f"{source.dataset!r} has {source.num_classes} classes; set "
          "--config.num_classes=-1 to take the dataset's")
    return config
  if method.needs_labels:
    raise DataError(f"{config.method} needs labels, and dataset "
                    f"{source.dataset!r} (split {source.split!r}) has none: "
                    "give a labelled dataset, e.g. a folder laid out as "
                    "PATH/<split>/<class>/*.jpg")
  if config.online_probe:
    logging.info("Online probe off: dataset %s has no labels",
                 source.dataset)
  config.num_classes = 0  # No probe, no kNN: nothing to classify.
  return config


def _fresh_state(built, method, config):
  """The initial state, created directly into its (replicated) sharding,
  and warm-started if the method does (e.g. a pretrained encoder)."""
  state = built.init(jax.random.PRNGKey(config.seed))
  if method.warm_start is not None:
    state = method.warm_start(state, config=config)
  return state




def _train_loop(state, batches, *, train_step, mesh, start_step, total_steps,
                config, ckpt, writer, step_hooks, evaluators, input_metrics,
                preemption):
  """Steps start_step+1..total_steps. Returns (state, whether it stopped
  early for a preemption, after saving that step)."""
  nonfinite = guards.ConsecutiveNonFinite(
      config_lib.value(config, "max_consecutive_nonfinite"))
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
        # input_metrics (e.g. bad_images) may stop a run on damaged data.
        writer.write_scalars(step, {**metric_logging.summarize(window),
                                    **input_metrics()})
        window = []
      evaluators_lib.run_due(evaluators, state, step, total_steps, writer)
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
  except UserError:  # A fatal streak, a collapse (stop_on_collapse), ...
    ckpt.wait()  # A save in flight completes; nothing is deleted.
    raise
  ckpt.wait()
  return state, False


@workdir_lock.releases_lock
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
  if method.prepare_config is not None:
    config = method.prepare_config(config)
  if config.download:
    if jax.process_count() > 1:
      raise UserError("config.download=True works in single-process runs "
                      "only: prepare the data once with `python -m "
                      "contrastive_jax.prepare DATASET --data_dir=DIR` first")
    from contrastive_jax import prepare  # pylint: disable=g-import-not-at-top
    prepare.download_and_prepare(config.dataset, config.data_dir)
  # Each split is resolved once; everything below reads through these.
  train_source = label_subset.apply_label_subset(
      sources.from_config(config, config.train_split, workdir=workdir),
      config)
  config = fit_config_to_data(config, method, train_source)
  # An ImageNet label subset (imagenet2012_subset/1pct) is evaluated on
  # imagenet2012's validation split.
  evaluator_entries = evaluators_lib.wanted(config, method=method,
                                            source=train_source)
  eval_source = (sources.open_source(
      label_subset.eval_dataset(config), config.eval_split,
      data_dir=config_lib.value(config, "data_dir"), workdir=workdir,
      options=config_lib.value(config, "data"))
                 if evaluators_lib.reads_eval_split(evaluator_entries)
                 else None)
  steps_per_epoch, total_steps = steps_for(config, train_source.num_examples)
  config_checks.validate_schedule(
      config, num_examples=train_source.num_examples,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  built = method_steps.build(config, mesh, steps_per_epoch=steps_per_epoch,
                             total_steps=total_steps)
  model = built.model
  views = view_spec.training_views(config, method.num_views,
                                   method.extra_views)
  make_train_ds = pipeline.pretrain_stream(
      source=train_source,
      local_batch_size=config.batch_size // jax.process_count(),
      view_specs=[spec for _, spec in views],
      view_fields=[field for field, _ in views],
      seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      augment_on_device=config_lib.value(config, "augment_on_device"))
  pipeline.eval_view(config.eval_augment)  # Its op arguments, checked now.
  # A new run's state, warm-started (e.g. from config.pretrained, which may
  # be rejected) before the workdir is touched.
  fresh_state = None
  if not checkpointing.has_checkpoint_dir(workdir):
    with jax.set_mesh(mesh):
      fresh_state = _fresh_state(built, method, config)
  _prepare_workdir(workdir)
  for source in (train_source, eval_source):
    if source is not None:
      source.commit()

  # SIGTERM from here on (the lock is held) stops the run at a step
  # boundary with the lock released, also before the first step.
  preemption = preemption_lib.Preemption()
  try:
    logging.info("%d devices over %d processes; %d steps (%d per epoch)",
                 mesh.size, jax.process_count(), total_steps,
                 steps_per_epoch)
    with jax.set_mesh(mesh):
      ckpt = checkpointing.Checkpointer(
          workdir, save_every_steps=config.checkpoint_every_steps,
          keep=config.keep_checkpoints,
          asynchronous=config.async_checkpointing)
      # The newest step that reads back, once this config is checked to
      # continue the stored one; None in a new workdir.
      abstract_state = built.abstract_state()
      state = ckpt.resume(abstract_state, config)
      if state is None or int(jax.device_get(state.step)) < total_steps:
        ckpt.check_free_space(abstract_state)  # A full disk: one line, now.
      if state is not None:
        logging.info("Resumed from %s at step %d", ckpt.directory,
                     int(state.step))
      else:
        state = (fresh_state if fresh_state is not None
                 else _fresh_state(built, method, config))
      start_step = int(jax.device_get(state.step))
      if start_step >= total_steps:
        logging.info("Training is done: the checkpoint is at step %d of %d.",
                     start_step, total_steps)
        if not evaluators_lib.any_at_end(evaluator_entries):
          ckpt.close()  # Nothing to write: not even a new events file.
          return state

      train_step = built.train_step
      writer = metric_logging.create_writer(workdir)
      if start_step == 0:
        writer.write_hparams(dict(config.to_dict()))
        hooks.write_start_summaries(config, writer, source=train_source)
      step_hooks = hooks.create_hooks(config, workdir=workdir, writer=writer,
                                      total_steps=total_steps)
      evaluators = evaluators_lib.create(
          evaluator_entries, evaluators_lib.Context(
              config=config, method=method, model=model, mesh=mesh,
              workdir=workdir, train_source=train_source,
              eval_source=eval_source))

      # The stream starts at the resumed step: nothing is replayed.
      batches = pipeline.as_numpy_iterator(make_train_ds(start_step))
      state, preempted = _train_loop(
          state, batches, train_step=train_step, mesh=mesh,
          start_step=start_step, total_steps=total_steps, config=config,
          ckpt=ckpt, writer=writer, step_hooks=step_hooks,
          evaluators=evaluators, preemption=preemption,
          input_metrics=train_source.input_metrics)
      if preempted:
        writer.flush()
        writer.close()
        ckpt.close()
        return state
      evaluators_lib.run_at_end(evaluators, state,
                                int(jax.device_get(state.step)), writer)
      writer.flush()
      writer.close()
      ckpt.close()
  finally:
    preemption.close()
  return state
