"""Things the loop does every so often that are not training: progress
reports and, as they are added, profiling, previews and monitors.

A hook is called after every step as `hook(step)` and decides itself whether
to act (clu periodic actions have exactly this shape).
"""

from typing import Callable

import ml_collections
from clu import metric_writers, periodic_actions


def create_hooks(config: ml_collections.ConfigDict, *, workdir: str,
                 writer: metric_writers.MetricWriter,
                 total_steps: int) -> list[Callable[[int], object]]:
  del workdir  # For hooks that write files of their own.
  return [
      # Steps/s and ETA to the log, steps_per_sec to the writer.
      periodic_actions.ReportProgress(
          num_train_steps=total_steps, writer=writer,
          every_steps=config.log_every_steps),
  ]
