"""A full disk (ENOSPC), a quota (EDQUOT) or a file-size limit (EFBIG) in
a write: recognising it in any error chain, saying it in a few words, and
keeping the fallout of a failed Orbax operation (its threads' tracebacks,
asyncio's unawaited futures, TensorStore's callbacks into a closed loop)
out of the one line a run ends with. The same command resumes once there
is space."""

import errno
import inspect
import logging as std_logging
import sys
import threading


# Write errors that more space (or a higher limit) cures, as the line says
# them: the same command resumes once they are gone.
_DISK_FULL_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded (EFBIG: ulimit -f)",
}
# How TensorStore and TensorFlow report them: as text.
_DISK_FULL_TEXT = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "File too large": errno.EFBIG,
    "os_error_code='28'": errno.ENOSPC,
    "os_error_code='122'": errno.EDQUOT,
    "os_error_code='27'": errno.EFBIG,
}


def disk_full_reason(error: BaseException | None) -> str | None:
  """What filled up, when `error` or anything in its chain is ENOSPC,
  EDQUOT or EFBIG; None otherwise."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
      return _DISK_FULL_ERRNOS[error.errno]
    for text, code in _DISK_FULL_TEXT.items():
      if text in str(error):
        return _DISK_FULL_ERRNOS[code]
    error = error.__cause__ or error.__context__
  return None


def is_disk_full(error: BaseException | None) -> bool:
  """Whether `error` or anything in its chain is ENOSPC, EDQUOT or EFBIG."""
  return disk_full_reason(error) is not None


# What an Orbax writer thread says when the operation it belongs to has
# already failed and its executor was shut down under it: the fallout of a
# failure reported elsewhere, never a failure of its own.
_SHUTDOWN_FALLOUT = ("cannot schedule new futures after",  # (interpreter) shutdown
                     "Event loop is closed")


class _QuietDiskFull(std_logging.Filter):
  """Drops the reports of a disk-full write that Orbax's threads (each with
  its traceback) and asyncio (a future nobody awaited) log, and the
  shutdown fallout of such a write in Orbax's other writer threads: the
  Checkpointer reports it in one line."""

  def filter(self, record):
    if record.levelno < std_logging.ERROR or not (
        "/orbax/" in record.pathname or record.name == "asyncio"):
      return True
    error = record.exc_info[1] if record.exc_info else None
    message = record.getMessage()
    return not (is_disk_full(error) or any(
        text in message for text in (*_DISK_FULL_TEXT, *_SHUTDOWN_FALLOUT)))


_QUIET_DISK_FULL = _QuietDiskFull()


def _drop_closed_loop_callbacks(previous_hook):
  """An unraisable-exception hook without the echoes of an Orbax operation
  that already failed (a disk-full save, a damaged restore), once per
  array after the failure itself was raised: TensorStore's callbacks into
  its closed event loop ("RuntimeError: Event loop is closed") and the
  errors of its abandoned coroutines, printed when they are collected."""

  def hook(unraisable):
    obj = unraisable.object
    if (unraisable.exc_type is RuntimeError and obj is None
        and str(unraisable.exc_value) == "Event loop is closed"):
      return
    if inspect.iscoroutine(obj) and "/orbax/" in obj.cr_code.co_filename:
      return
    previous_hook(unraisable)

  hook.drops_closed_loop_callbacks = True
  return hook


def quiet_failure_fallout():
  """Installs the two above (once)."""
  # Orbax logs through absl's logger; addFilter ignores a repeat.
  std_logging.getLogger("absl").addFilter(_QUIET_DISK_FULL)
  std_logging.getLogger("asyncio").addFilter(_QUIET_DISK_FULL)
  if not getattr(sys.unraisablehook, "drops_closed_loop_callbacks", False):
    sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)
  if not getattr(threading.excepthook, "drops_disk_full", False):
    threading.excepthook = _drop_disk_full_in_threads(threading.excepthook)


def _drop_disk_full_in_threads(hook):
  """A thread's exception hook that stays silent about a full disk (or a
  file-size limit) in a background writer (an Orbax save thread failing
  after the run has said so in its one line); anything else goes to
  `hook`."""

  def excepthook(args):
    if is_disk_full(args.exc_value):
      return
    hook(args)

  excepthook.drops_disk_full = True
  return excepthook
