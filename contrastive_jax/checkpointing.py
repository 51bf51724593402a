"""Orbax checkpoints of the whole train state, plus the config that made it.

Layout: `<workdir>/checkpoints/<step>/{state,config}`. Saves are asynchronous
(training continues while the previous save is written) and atomic: Orbax
writes into a temporary directory and renames it when complete, so an
interrupted save never replaces the last good checkpoint. Restoring uses the
shardings of the abstract state it is given, i.e. the current mesh.

Resuming (`Checkpointer.resume`) first checks that the new config may
continue the stored one (resume_check.py), then restores the newest step
that reads back. A damaged newer step is moved to
`<workdir>/damaged_checkpoints/<step>` for the user to inspect: left among
the checkpoints, Orbax would skip every save up to its step number and,
once it is among the oldest `keep`, delete it.
"""

import os
import re
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from contrastive_jax import disk_full
from contrastive_jax import resume_check
from contrastive_jax.disk_full import disk_full_reason, is_disk_full  # noqa: F401
from contrastive_jax.errors import CheckpointError, ConfigError

STATE, CONFIG = "state", "config"
DAMAGED_DIR = "damaged_checkpoints"


class DamagedCheckpoint(CheckpointError):
  """One step of a checkpoint directory cannot be read back."""

  def __init__(self, directory: str, step: int, why: str):
    super().__init__(f"cannot restore checkpoint step {step} from "
                     f"{directory}: {why}")
    self.step, self.why = step, why


def checkpoint_dir(workdir: str) -> str:
  workdir = os.fspath(workdir)
  if "://" not in workdir:  # Orbax needs absolute local paths (gs:// are).
    workdir = os.path.abspath(workdir)
  return os.path.join(workdir, "checkpoints")


def has_checkpoint_dir(workdir: str) -> bool:
  """Whether `<workdir>/checkpoints` exists (read only; any file system)."""
  return epath.Path(checkpoint_dir(workdir)).exists()


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`, for restoring into its layout."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree)


# Why a step whose config matches does not restore into the state this code
# builds: its model or optimizer state is laid out as another version's.
STRUCTURE_CHANGED = (
    "its state is not laid out as this version of contrastive_jax builds it "
    "for the same config (written by a version whose model or optimizer "
    "state differed; resume it with that version, or pretrain anew in a "
    "new --workdir)")


def reason(error: BaseException) -> str:
  """The innermost cause of `error`, on one short line (Orbax wraps
  TensorStore's precise message in a vague one)."""
  seen = {id(error)}
  while (inner := error.__cause__ or error.__context__) is not None and id(
      inner) not in seen:
    seen.add(id(inner))
    error = inner
  text = str(error).strip()
  line = text.splitlines()[0] if text else ""
  # TensorStore's spec and database path repeat what the caller says.
  line = re.sub(r"\s*\[tensorstore_spec=.*$", "", line)
  line = re.sub(r' in OCDBT database at local file "[^"]*"', "", line)
  if re.search(r"structures do not match|Structure mismatch|Expected "
               r"identical structures", text):
    # Orbax's whole message is the two trees; the config already matched.
    return STRUCTURE_CHANGED
  if len(line) > 160:
    line = line[:157] + "..."
  return f"{type(error).__name__}: {line}" if line else type(error).__name__


def none_reads_back(directory: str,
                    damaged: list[DamagedCheckpoint]) -> CheckpointError:
  """The error for a checkpoint directory none of whose steps reads back."""
  if len(damaged) == 1:
    return damaged[0]
  if len({e.why for e in damaged}) == 1:  # One cause, said once.
    steps = ", ".join(str(e.step) for e in damaged)
    return CheckpointError(f"cannot restore any checkpoint in {directory} "
                           f"(steps {steps}): {damaged[0].why}")
  return CheckpointError(
      f"cannot restore any checkpoint in {directory}: " + "; ".join(
          f"step {e.step}: {e.why}" for e in damaged))


def _free_bytes(directory: str) -> int | None:
  """Bytes free to us on `directory`'s disk; None where unknown (gs://)."""
  if "://" in directory:
    return None
  try:
    stat = os.statvfs(directory)
  except OSError:
    return None
  return stat.f_bavail * stat.f_frsize


# What an interrupted save leaves; Orbax removes it before saving again.
_LEFTOVER = ".orbax-checkpoint-tmp"


def _reclaimable_bytes(directory: str) -> int:
  """Bytes in the leftovers of interrupted saves in `directory`: they
  count as free, since the next save clears them first."""
  total = 0
  try:
    names = os.listdir(directory)
  except OSError:
    return 0
  for name in names:
    if _LEFTOVER not in name:
      continue
    for root, _, files in os.walk(os.path.join(directory, name)):
      for f in files:
        try:
          total += os.lstat(os.path.join(root, f)).st_size
        except OSError:
          pass
  return total


def _bytes(n: int) -> str:
  for unit in ("bytes", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
    n /= 1024


class Checkpointer:
  """Saves every `save_every_steps` steps, keeps the last `keep`."""

  def __init__(self, workdir: str, *, save_every_steps: int, keep: int,
               read_only: bool = False, asynchronous: bool = True):
    self.directory = checkpoint_dir(workdir)
    self._save_every_steps = save_every_steps
    self._in_flight = None  # The step an asynchronous save is writing.
    disk_full.quiet_failure_fallout()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=asynchronous, create=not read_only,
        read_only=read_only)
    try:
      self._manager = ocp.CheckpointManager(
          self.directory, options=options,
          item_handlers={STATE: ocp.StandardCheckpointHandler(),
                         CONFIG: ocp.JsonCheckpointHandler()})
    except OSError as e:
      if is_disk_full(e):
        raise CheckpointError(f"{disk_full_reason(e)}: cannot create "
                              f"{self.directory}") from e
      raise CheckpointError(f"cannot create {self.directory}: "
                            f"{e.strerror or e}") from e

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def state_metadata(self, step: int) -> Any:
    """The saved state's tree of array metadata (shape, dtype, ...)."""
    try:
      metadata = self._manager.item_metadata(step)[STATE]
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, reason(e)) from e
    if metadata is None:
      # Orbax returns None where state/_METADATA is missing or unreadable.
      raise self._damaged(step, "state/_METADATA is missing or unreadable")
    return metadata.tree if hasattr(metadata, "tree") else metadata

  def _damaged(self, step: int, why: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(self.directory, step, why)

  # --- Saving -------------------------------------------------------------

  def save(self, step: int, state: Any, config: ml_collections.ConfigDict, *,
           force: bool = False) -> bool:
    """Saves `state` as `step` if it is a multiple of save_every_steps (or
    `force`). `step` is passed by the caller so that deciding costs no
    device-to-host sync. A full disk ends in a CheckpointError saying
    which step is the newest complete one."""
    if not force and step % self._save_every_steps:
      return False
    self.wait()  # Orbax would wait too; here a failure names its step.
    try:
      saved = self._manager.save(
          step, force=force,
          args=ocp.args.Composite(**{
              STATE: ocp.args.StandardSave(state),
              CONFIG: ocp.args.JsonSave(config.to_dict()),
          }))
    except Exception as e:  # pylint: disable=broad-except
      if is_disk_full(e):
        raise self._disk_full(step, e) from e
      raise
    if saved:
      self._in_flight = step
    return saved

  def wait(self):
    """Until the save in flight is written."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if self._in_flight is not None and is_disk_full(e):
        raise self._disk_full(self._in_flight, e) from e
      raise
    finally:
      self._in_flight = None

  def _disk_full(self, step: int, error: BaseException) -> CheckpointError:
    """The error of a save of `step` that found the disk full; the
    incomplete write stays in a temporary directory Orbax ignores."""
    self._in_flight = None
    try:
      self._manager.reload()
      newest = self._manager.latest_step()
    except (OSError, ValueError):
      newest = None  # Reading the directory failed too: say nothing.
    if newest is None:
      where = "there is no complete checkpoint"
    else:
      where = f"the newest complete checkpoint is step {newest}"
    return CheckpointError(f"{disk_full_reason(error)} while saving step "
                           f"{step} in {self.directory}; {where}")

  def check_free_space(self, abstract_state: Any, *, margin: int = 1 << 20):
    """CheckpointError when the checkpoint directory's disk cannot hold one
    more checkpoint of `abstract_state` (plus `margin` bytes of metadata
    and logs): better said before training than after the first interval.
    Local directories only (no free space is known for gs://)."""
    free = _free_bytes(self.directory)
    if free is not None:
      free += _reclaimable_bytes(self.directory)
    if free is None:
      return
    size = sum(int(x.size) * x.dtype.itemsize
               for x in jax.tree.leaves(abstract_state))
    if free < size + margin:
      newest = self.latest_step()
      where = ("there is no complete checkpoint" if newest is None else
               f"the newest complete checkpoint is step {newest}")
      raise CheckpointError(
          f"no space left on device for checkpoints in {self.directory}: "
          f"{_bytes(free)} free, a checkpoint needs {_bytes(size)} and the "
          f"logs {_bytes(margin)}; {where}")

  # --- Restoring ----------------------------------------------------------

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """The state of `step` (default: the latest) in the layout of
    `abstract_state`; DamagedCheckpoint when it does not read back."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{
              STATE: ocp.args.StandardRestore(abstract_state)}))
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and TensorStore raise anything from ValueError to a bare
      # Exception for a truncated or missing file.
      raise self._damaged(step, reason(e)) from e
    return restored[STATE]

  def restore_config(self, step: int | None = None) -> dict:
    """The config dict stored with `step`; DamagedCheckpoint when it does
    not read back."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    try:
      config = self._manager.restore(
          step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[
              CONFIG]
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its config: {reason(e)}") from e
    if not isinstance(config, dict) or "method" not in config:
      raise self._damaged(step, "its config is not a run's config")
    return config

  def resume(self, abstract_state: Any,
             config: ml_collections.ConfigDict) -> Any | None:
    """The newest step's state, or None in a new checkpoint directory.

    Every step's stored config is compared with `config` before its state
    is read: a field that may not change (resume_check.MAY_CHANGE) is a
    ConfigError naming it. A step that does not read back is logged,
    skipped and moved to `<workdir>/damaged_checkpoints/`; a
    CheckpointError names them all if none reads back.
    """
    try:
      return self._resume(abstract_state, config)
    except BaseException:
      self.close()  # An open manager's threads print tracebacks at exit.
      raise

  def _resume(self, abstract_state, config):
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        stored = self.restore_config(step)
        changes = resume_check.changed_fields(stored, config.to_dict())
        if changes:
          raise ConfigError(
              f"cannot resume {self.directory} (step {step}) with a changed "
              f"config: {resume_check.describe(changes)}; rerun with the "
              "stored values, or use a new --workdir for another experiment "
              "(the fields that may change are listed in docs/pretraining.md, "
              "Resuming)")
        state = self.restore(abstract_state, step)
      except DamagedCheckpoint as e:
        logging.warning("Skipping damaged checkpoint step %d: %s", step,
                        e.why)
        damaged.append(e)
        continue
      if damaged:
        self._set_aside([e.step for e in damaged])
      return state
    if not damaged:
      return None
    raise none_reads_back(self.directory, damaged)

  def _set_aside(self, steps: list[int]):
    """Moves the damaged `steps` to <workdir>/damaged_checkpoints/, where
    Orbax neither lists nor deletes them."""
    target_dir = epath.Path(os.path.dirname(self.directory)) / DAMAGED_DIR
    if jax.process_index() == 0:
      for step in steps:
        source = epath.Path(self.directory) / str(step)
        target = target_dir / str(step)
        suffix = 1
        while target.exists():  # A step damaged in an earlier run too.
          target, suffix = target_dir / f"{step}.{suffix}", suffix + 1
        try:
          target_dir.mkdir(parents=True, exist_ok=True)
          source.rename(target)
        except OSError as e:
          raise CheckpointError(
              f"checkpoint step {step} in {self.directory} is damaged and "
              f"cannot be moved to {target_dir} ({reason(e)}): move it out "
              "of the checkpoints directory, then rerun") from e
        logging.warning("Moved damaged checkpoint step %d to %s", step,
                        target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("checkpointing:set_aside")
    self._manager.reload()

  def close(self):
    self._manager.close()
