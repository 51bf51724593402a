"""Orbax checkpoints of the whole train state, plus the config that made it.

Layout: `<workdir>/checkpoints/<step>/{state,config}`. Saves are asynchronous
(training continues while the previous save is written) and atomic: Orbax
writes into a temporary directory and renames it when complete, so an
interrupted save never replaces the last good checkpoint. Restoring uses the
shardings of the abstract state it is given, i.e. the current mesh.
"""

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from contrastive_jax.errors import CheckpointError

STATE, CONFIG = "state", "config"


def checkpoint_dir(workdir: str) -> str:
  workdir = os.fspath(workdir)
  if "://" not in workdir:  # Orbax needs absolute local paths (gs:// are).
    workdir = os.path.abspath(workdir)
  return os.path.join(workdir, "checkpoints")


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`, for restoring into its layout."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree)


class Checkpointer:
  """Saves every `save_every_steps` steps, keeps the last `keep`."""

  def __init__(self, workdir: str, *, save_every_steps: int, keep: int,
               read_only: bool = False, asynchronous: bool = True):
    self.directory = checkpoint_dir(workdir)
    self._save_every_steps = save_every_steps
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=asynchronous, create=not read_only,
        read_only=read_only)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       CONFIG: ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def state_metadata(self, step: int) -> Any:
    """The saved state's tree of array metadata (shape, dtype, ...)."""
    metadata = self._manager.item_metadata(step)[STATE]
    return metadata.tree if hasattr(metadata, "tree") else metadata

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict, *,
           force: bool = False) -> bool:
    """Saves `state` as `step` if it is a multiple of save_every_steps (or
    `force`). `step` is passed by the caller so that deciding costs no
    device-to-host sync."""
    if not force and step % self._save_every_steps:
      return False
    return self._manager.save(
        step, force=force,
        args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            CONFIG: ocp.args.JsonSave(config.to_dict()),
        }))

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{
              STATE: ocp.args.StandardRestore(abstract_state)}))
    except (ValueError, KeyError, FileNotFoundError, OSError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise CheckpointError(
          f"cannot restore checkpoint step {step} from {self.directory}: "
          f"{type(e).__name__}: {first_line}") from e
    return restored[STATE]

  def restore_config(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    return self._manager.restore(
        step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[
            CONFIG]

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()
