"""Stopping at a step boundary when the machine is about to go away.

A SIGTERM (what TPU VM maintenance, Kubernetes and SLURM send before the
kill) asks the loop to save a checkpoint after the current step and exit
with status 0. In a multi-process run every process must save the SAME step:
there JAX's preemption sync manager (enabled by `jax.distributed`, which
installs its own SIGTERM handler and agrees on a step through the
coordination service in the background) decides. A single process has no
coordination service, so a Python signal handler sets a flag; checking it
costs nothing.
"""

import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils


class Preemption:
  """`reached(step)`: whether to save and stop after `step`. Call it after
  every step, with the same steps on every process."""

  def __init__(self):
    self._requested = threading.Event()
    # With jax.distributed up, JAX's handler owns SIGTERM (its preemption
    # service is on by default: config jax_enable_preemption_service).
    self._sync_manager = jax.distributed.is_initialized()
    self._previous = None
    if not self._sync_manager and (threading.current_thread() is
                                   threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint after this step, then "
                    "stopping")
    self._requested.set()

  def reached(self, step: int) -> bool:
    if self._sync_manager:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()

  def close(self):
    """Gives SIGTERM back to whoever had it before."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
