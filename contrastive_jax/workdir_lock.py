"""One run per workdir: `<workdir>/run.lock`, held while a run trains.

Two runs writing one workdir would both save the same steps and append
every metrics line twice. Process 0 takes the lock once the run's checks
have passed, before it writes anything else there; another run then stops
with one line naming the holder.

The lock file holds the holder's host, boot id, pid, start time and a
heartbeat time that a daemon thread rewrites every HEARTBEAT_SECONDS. It is
removed when the run ends, also on an error (`releases_lock`). A run that
was killed leaves it; the next run takes it over when it is stale:
  * its holder ran on this machine (same host and boot id) and its process
    is gone, or
  * its heartbeat is older than STALE_SECONDS, on any host (a workdir on
    gs:// shared by VMs; host clocks are assumed to agree within a minute,
    as NTP-synced cloud VMs do).
Deleting the file by hand takes over at once.

Local disks and NFS: the file is created atomically (a hard link of a
complete temporary file, which fails when the lock exists; O_EXCL where
links are not supported), so of two runs starting together exactly one
wins. gs:// (through tf.io.gfile): Cloud Storage offers no create-if-absent
without its own client library, so taking the lock is best effort: the run
writes the file, waits VERIFY_SECONDS and reads it back, and stops if
another run's file replaced it. Two runs started within that window of each
other can both miss each other; a heartbeat that finds another run's file
logs an error and stops beating (that run then owns the workdir).
"""

import contextvars
import datetime
import functools
import json
import os
import socket
import threading
import time
import uuid

from absl import logging

from contrastive_jax.errors import UserError

LOCK_FILE = "run.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0
VERIFY_SECONDS = 2.0

# Tokens of the locks this process holds (a lock file naming this process
# but not held by it is a leftover, e.g. of an earlier run in a notebook).
_held_tokens: set[str] = set()
_held_lock = threading.Lock()
# The locks taken during the current `releases_lock` call.
_scope: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "workdir_locks", default=None)


class WorkdirBusy(UserError):
  """Another live run holds the workdir."""


def _is_remote(path: str) -> bool:
  return "://" in path


def _boot_id() -> str | None:
  try:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
      return f.read().strip()
  except OSError:
    return None


def _pid_alive(pid) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    return True
  try:  # Linux: a killed process not yet reaped by its parent is a zombie.
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def _format_time(seconds) -> str:
  try:
    return datetime.datetime.fromtimestamp(seconds).isoformat(
        sep=" ", timespec="seconds")
  except (TypeError, ValueError, OverflowError, OSError):
    return "?"


def stale_reason(holder: dict, *, now: float | None = None, host=None,
                 boot_id=None) -> str | None:
  """Why the lock `holder` (the file's content) may be taken over, or None
  while its run may still be alive."""
  now = time.time() if now is None else now
  host = socket.gethostname() if host is None else host
  boot_id = _boot_id() if boot_id is None else boot_id
  beat = holder.get("heartbeat")
  if not isinstance(beat, (int, float)):
    return "it is unreadable"
  if holder.get("host") == host and holder.get("boot_id") == boot_id:
    pid = holder.get("pid")
    if pid == os.getpid():
      with _held_lock:
        if holder.get("token") not in _held_tokens:
          return "it was left by an earlier run of this process"
    elif not _pid_alive(pid):
      return f"its process {pid} is gone"
  if now - beat > STALE_SECONDS:
    return f"its heartbeat is {now - beat:.0f} s old"
  return None


class _Files:
  """The lock file's reads and writes, local (os) or remote (tf.io.gfile)."""

  def __init__(self, path: str):
    self.path = path
    self.remote = _is_remote(path)

  def read(self) -> dict | None:
    """The holder, None when there is no lock, {} when it is unreadable."""
    try:
      if self.remote:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        if not tf.io.gfile.exists(self.path):
          return None
        with tf.io.gfile.GFile(self.path, "r") as f:
          text = f.read()
      else:
        with open(self.path, "rb") as f:
          text = f.read()
    except FileNotFoundError:
      return None
    try:
      # Bytes that are not UTF-8, or not JSON: unreadable, stale by age.
      holder = json.loads(text)
    except ValueError:
      return {}
    return holder if isinstance(holder, dict) else {}

  def age(self) -> float:
    """Seconds since the file was last written (0 when unknown)."""
    try:
      if self.remote:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        mtime = tf.io.gfile.stat(self.path).mtime_nsec / 1e9
      else:
        mtime = os.stat(self.path).st_mtime
    except Exception:  # pylint: disable=broad-except
      return 0.0
    return time.time() - mtime

  def create(self, text: str) -> bool:
    """Writes the lock unless it exists (atomically on local disks);
    False when another run's lock is there."""
    if self.remote:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      if tf.io.gfile.exists(self.path):
        return False
      with tf.io.gfile.GFile(self.path, "w") as f:
        f.write(text)
      return True
    tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
    try:
      os.link(tmp, self.path)  # Fails if the lock exists.
      return True
    except FileExistsError:
      return False
    except OSError:  # No hard links here: O_EXCL.
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
      return True
    finally:
      os.remove(tmp)

  def replace(self, text: str):
    if self.remote:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      with tf.io.gfile.GFile(self.path, "w") as f:
        f.write(text)
      return
    tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, self.path)

  def remove_if(self, holder: dict) -> bool:
    """Removes the lock if it still holds `holder`'s token; False when
    another run's lock has replaced it (or none is left)."""
    if self.remote:
      current = self.read()
      if current is None or current.get("token") != holder.get("token"):
        return False
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      try:
        tf.io.gfile.remove(self.path)
      except tf.errors.NotFoundError:
        return False
      return True
    # Moved aside first, so that a lock another run creates meanwhile is
    # never the one removed.
    aside = f"{self.path}.{uuid.uuid4().hex}.old"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    try:
      with open(aside, "rb") as f:
        moved = json.loads(f.read() or b"{}")
    except ValueError:  # Not UTF-8, not JSON: the unreadable lock `read` saw.
      moved = {}
    if not isinstance(moved, dict):
      moved = {}
    if moved.get("token") == holder.get("token"):
      os.remove(aside)
      return True
    try:  # Not the one we meant: put it back unless a new lock exists.
      os.link(aside, self.path)
    except OSError:
      pass
    os.remove(aside)
    return False


class WorkdirLock:
  """A held lock; `release()` removes it and stops the heartbeat."""

  def __init__(self, files: _Files, holder: dict):
    self._files, self.holder = files, holder
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, daemon=True,
                                    name="workdir-lock-heartbeat")
    self._thread.start()

  @property
  def path(self) -> str:
    return self._files.path

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        current = self._files.read()
        if current is not None and current.get("token") != self.holder[
            "token"]:
          logging.error("The lock %s was taken over by another run (%s); "
                        "this run no longer holds its workdir", self.path,
                        _describe(current))
          return
        self.holder["heartbeat"] = time.time()
        self._files.replace(json.dumps(self.holder))
      except Exception as e:  # pylint: disable=broad-except
        # A missed beat is harmless until STALE_SECONDS; keep trying.
        logging.warning("Could not refresh the lock %s: %s", self.path, e)

  def release(self):
    if self._stop.is_set():
      return
    self._stop.set()
    self._thread.join()
    with _held_lock:
      _held_tokens.discard(self.holder["token"])
    try:
      if not self._files.remove_if(self.holder):
        logging.warning("The lock %s was not this run's any more; left it",
                        self.path)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Could not remove the lock %s: %s", self.path, e)


def _describe(holder: dict) -> str:
  if not holder:
    return "holder unknown: the file is unreadable"
  beat = holder.get("heartbeat")
  age = (f"{time.time() - beat:.0f} s ago"
         if isinstance(beat, (int, float)) else "?")
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
          f"started {_format_time(holder.get('started'))}, last heartbeat "
          f"{age}")


def acquire(workdir: str) -> WorkdirLock:
  """Takes the lock of `workdir` (which exists), taking over a stale one;
  WorkdirBusy when a live run holds it."""
  files = _Files(os.path.join(os.fspath(workdir), LOCK_FILE))
  now = time.time()
  holder = {"host": socket.gethostname(), "boot_id": _boot_id(),
            "pid": os.getpid(), "started": now, "heartbeat": now,
            "token": uuid.uuid4().hex}
  for _ in range(3):  # A takeover race may need another look.
    current = files.read()
    if current is not None:
      why = stale_reason(current, now=time.time())
      if why is None or (not current and files.age() < STALE_SECONDS):
        raise WorkdirBusy(
            f"workdir {workdir} is in use by another run ({_describe(current)}"
            f"; {files.path}): wait for it to end or stop it; a lock left by "
            "a killed run is taken over once its process is gone (same host) "
            f"or its heartbeat is older than {STALE_SECONDS:.0f} s, or "
            "delete the file")
      logging.warning("Taking over the lock %s: %s (%s)", files.path, why,
                      _describe(current))
      if not files.remove_if(current):
        continue  # Another run moved it meanwhile: look again.
    try:
      created = files.create(json.dumps(holder))
    except OSError as e:
      raise UserError(f"workdir {workdir} is not writable: cannot create "
                      f"{files.path} ({e.strerror or e})") from None
    if not created:
      continue
    if files.remote:
      # No create-if-absent on Cloud Storage: see whether another run's
      # write replaced ours.
      time.sleep(VERIFY_SECONDS)
      current = files.read()
      if not current or current.get("token") != holder["token"]:
        raise WorkdirBusy(f"workdir {workdir} is in use by another run "
                          f"that started at the same time "
                          f"({_describe(current or {})}; {files.path})")
    with _held_lock:
      _held_tokens.add(holder["token"])
    lock = WorkdirLock(files, holder)
    scope = _scope.get()
    if scope is not None:
      scope.append(lock)
    return lock
  raise WorkdirBusy(f"workdir {workdir} is in use: other runs keep taking "
                    f"its lock {files.path}")


def releases_lock(fn):
  """Releases the workdir locks `fn` takes (through `acquire`) when it
  returns or raises. A killed process releases nothing: its lock becomes
  stale (see the module docstring)."""

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    token = _scope.set([])
    try:
      return fn(*args, **kwargs)
    finally:
      locks = _scope.get()
      _scope.reset(token)
      for lock in reversed(locks):
        lock.release()

  return wrapper
