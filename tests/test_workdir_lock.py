"""One run per workdir (contrastive_jax/workdir_lock.py): a second run stops
with one line naming the holder; a lock left by a killed run is taken over;
the lock goes when the run ends, also on an error."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest

from contrastive_jax import train, workdir_lock
from contrastive_jax.errors import ConfigError
from contrastive_jax.workdir_lock import WorkdirBusy
from tests.test_bad_input import snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = socket.gethostname()


def lock_file(workdir):
  return os.path.join(workdir, workdir_lock.LOCK_FILE)


def write_holder(workdir, **fields):
  now = time.time()
  holder = dict(host=HOST, boot_id=workdir_lock._boot_id(), pid=os.getpid(),
                started=now, heartbeat=now, token="someone-else")
  holder.update(fields)
  with open(lock_file(workdir), "w", encoding="utf-8") as f:
    json.dump(holder, f)
  return holder


def dead_pid():
  """The pid of a process that has exited (and been reaped)."""
  probe = subprocess.Popen(["true"])
  probe.wait()
  return probe.pid


def test_a_held_lock_stops_a_second_taker_naming_the_holder(tmp_path):
  lock = workdir_lock.acquire(str(tmp_path))
  holder = json.load(open(lock_file(tmp_path), encoding="utf-8"))
  assert holder["pid"] == os.getpid() and holder["host"] == HOST
  with pytest.raises(WorkdirBusy, match=rf"^workdir {tmp_path} is in use by "
                     rf"another run \(host {HOST}, pid {os.getpid()}, started "
                     r".*, last heartbeat \d+ s ago; .*run.lock\): wait"):
    workdir_lock.acquire(str(tmp_path))
  lock.release()
  assert not os.path.exists(lock_file(tmp_path))
  workdir_lock.acquire(str(tmp_path)).release()  # Free again.
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fields,reason", [
    (dict(pid="DEAD"), "its process .* is gone"),
    (dict(host="another-vm", heartbeat_age=1000),
     "its heartbeat is 1\\d\\d\\d s old"),
    (dict(boot_id="before-a-reboot", pid=1, heartbeat_age=400),
     "heartbeat is"),
    (dict(token="left-by-this-process"), "earlier run of this process"),
])
def test_a_stale_lock_is_taken_over(tmp_path, caplog, fields, reason):
  fields = dict(fields)  # Ages are resolved now, not at collection time.
  if fields.get("pid") == "DEAD":
    fields["pid"] = dead_pid()
  if "heartbeat_age" in fields:
    fields["heartbeat"] = time.time() - fields.pop("heartbeat_age")
  write_holder(tmp_path, **fields)
  lock = workdir_lock.acquire(str(tmp_path))
  assert json.load(open(lock_file(tmp_path)))["token"] == lock.holder["token"]
  taken = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith("Taking over the lock")]
  assert len(taken) == 1 and re.search(reason, taken[0]), taken
  lock.release()


@pytest.mark.parametrize("fields", [
    dict(pid=1),  # alive (init), this host
    dict(host="another-vm", pid=12345),  # fresh heartbeat elsewhere
])
def test_a_live_lock_is_not_stale(fields):
  now = time.time()
  holder = dict(dict(host=HOST, boot_id=workdir_lock._boot_id(), started=now,
                     heartbeat=now - 10, token="t"), **fields)
  assert workdir_lock.stale_reason(holder, now=now) is None
  assert "heartbeat is 400 s old" in workdir_lock.stale_reason(
      dict(holder, heartbeat=now - 400), now=now)


@pytest.mark.parametrize("content", [b"{half a lock", b"", b"\xff\xfe\x00x",
                                     b"[1, 2]"])
def test_an_unreadable_lock_is_busy_until_old(tmp_path, content):
  """Half-written JSON, an empty file, bytes that are not UTF-8, JSON that
  is no holder: busy while the file is young, taken over once it is old."""
  with open(lock_file(tmp_path), "wb") as f:
    f.write(content)
  with pytest.raises(WorkdirBusy, match="holder unknown"):
    workdir_lock.acquire(str(tmp_path))
  old = time.time() - workdir_lock.STALE_SECONDS - 10
  os.utime(lock_file(tmp_path), (old, old))
  workdir_lock.acquire(str(tmp_path)).release()


def test_the_heartbeat_refreshes_the_file(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_SECONDS", 0.05)
  lock = workdir_lock.acquire(str(tmp_path))
  first = lock.holder["heartbeat"]
  time.sleep(0.3)
  beat = json.load(open(lock_file(tmp_path)))["heartbeat"]
  assert beat > first
  # Taken over by another run: this one stops beating and leaves its file.
  write_holder(tmp_path, token="the-new-run")
  time.sleep(0.3)
  assert json.load(open(lock_file(tmp_path)))["token"] == "the-new-run"
  lock.release()
  assert json.load(open(lock_file(tmp_path)))["token"] == "the-new-run"


_HOLD = """
import sys, time
from contrastive_jax import workdir_lock
workdir_lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holder_is_taken_over_and_a_live_one_is_not(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)],
                          cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirBusy, match=f"pid {proc.pid}"):
      workdir_lock.acquire(str(tmp_path))
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  workdir_lock.acquire(str(tmp_path)).release()


def test_a_second_run_stops_before_writing_and_the_lock_goes_after(tmp_path):
  from tests.test_bad_input import _in_process_config  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "keep.txt").write_text("precious")
  other = workdir_lock.acquire(str(workdir))  # A run in progress.
  def files_and_holder():
    # The holder's heartbeat thread may rewrite run.lock meanwhile (every
    # HEARTBEAT_SECONDS); who holds it must not change.
    files = snapshot(workdir)
    files.pop("run.lock")
    with open(lock_file(workdir), encoding="utf-8") as f:
      holder = json.load(f)
    return files, (holder["pid"], holder["started"])

  before = files_and_holder()
  with pytest.raises(WorkdirBusy, match=f"^workdir {workdir} is in use"):
    train.train_and_evaluate(_in_process_config([]), str(workdir),
                             devices=jax.devices()[:8])
  assert files_and_holder() == before
  other.release()
  # A run that stops with an error after taking the lock releases it.
  with pytest.raises(ConfigError, match="pretend"):
    workdir_lock.releases_lock(_fail_after_locking)(str(workdir))
  assert not os.path.exists(lock_file(workdir))


def _fail_after_locking(workdir):
  workdir_lock.acquire(workdir)
  raise ConfigError("pretend the run failed")


def test_remote_workdirs_through_tf_io_gfile(monkeypatch):
  """gs:// goes through tf.io.gfile; TensorFlow's ram:// filesystem stands
  in for it (no create-if-absent there either)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  workdir = f"ram://bucket/run_{os.getpid()}"
  tf.io.gfile.makedirs(workdir)
  path = f"{workdir}/{workdir_lock.LOCK_FILE}"
  monkeypatch.setattr(workdir_lock, "VERIFY_SECONDS", 0.0)
  lock = workdir_lock.acquire(workdir)
  with pytest.raises(WorkdirBusy, match=f"pid {os.getpid()}"):
    workdir_lock.acquire(workdir)
  lock.release()
  assert not tf.io.gfile.exists(path)
  # Another VM's lock without a heartbeat for 1000 s is taken over.
  stale = dict(host="another-vm", boot_id="b", pid=7, started=0.0,
               heartbeat=time.time() - 1000, token="gone")
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(stale))
  workdir_lock.acquire(workdir).release()
  # Two runs writing at once: the one whose write lost, reading back
  # after VERIFY_SECONDS, stops.
  def other_run_writes(seconds):
    del seconds
    tf.io.gfile.remove(path)  # ram:// keeps a longer file's tail; GCS not.
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(json.dumps(dict(stale, heartbeat=time.time(), token="other")))
  monkeypatch.setattr(workdir_lock.time, "sleep", other_run_writes)
  with pytest.raises(WorkdirBusy, match="another run that started at the "
                     "same time"):
    workdir_lock.acquire(workdir)
  assert json.loads(tf.io.gfile.GFile(path).read())["token"] == "other"
