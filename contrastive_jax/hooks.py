"""Things the loop does besides training: progress reports, the profiler
window, the augmentation preview at the start of a run.

A hook is called after every step as `hook(step)` and decides itself whether
to act (clu periodic actions have exactly this shape).
"""

from typing import Callable

import jax
import ml_collections
from absl import logging
from clu import metric_writers, periodic_actions

from contrastive_jax import preview
from contrastive_jax.config import lib as config_lib


def create_hooks(config: ml_collections.ConfigDict, *, workdir: str,
                 writer: metric_writers.MetricWriter,
                 total_steps: int) -> list[Callable[[int], object]]:
  hooks = [
      # Steps/s and ETA to the log, steps_per_sec to the writer.
      periodic_actions.ReportProgress(
          num_train_steps=total_steps, writer=writer,
          every_steps=config.log_every_steps),
  ]
  profiler = _profiler(config, workdir=workdir, total_steps=total_steps)
  if profiler is not None:
    hooks.append(profiler)
  return hooks


def write_start_summaries(config: ml_collections.ConfigDict,
                          writer: metric_writers.MetricWriter, *, source):
  """Once, before the first step of a new run: the augmentation preview
  (config.preview_images rows of `source`) as a TensorBoard image."""
  if jax.process_index() == 0:  # The others' writers only log.
    preview.write_summary(config, writer, source=source)


def _profiler(config, *, workdir, total_steps):
  """A JAX trace of config.profile_steps steps after step
  config.profile_start_step, into workdir/plugins/profile/ (TensorBoard's
  profile plugin reads it there). Process 0 only: local processes of one
  host would write the same file name.
  """
  num_steps = config_lib.value(config, "profile_steps")
  if num_steps <= 0 or jax.process_index() != 0:
    return None
  # Hooks run after their step, so the window starts after step `start`;
  # starting after step 1 keeps compilation out of the trace.
  start = max(1, config_lib.value(config, "profile_start_step"))
  if start >= total_steps:
    logging.warning("Not profiling: profile_start_step=%d is not before the "
                    "last step %d", start, total_steps)
    return None
  return periodic_actions.Profile(
      logdir=workdir, first_profile=start,
      # The window ends with the run at the latest, or the trace is lost.
      num_profile_steps=min(num_steps, total_steps - start),
      # One window, by steps only (clu's defaults also repeat it hourly and
      # extend it to 3 s).
      profile_duration_ms=None, every_steps=None, every_secs=None)
