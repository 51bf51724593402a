"""Interrupted runs: SIGKILL at a random step, SIGTERM (preemption) and a
killed checkpoint write. Resuming in the same workdir must end bit-identical
to a run never interrupted: params, optimizer state, BN statistics, RNG.

The runs read an image folder of real PNG files (the digits written out):
the folder source reads by index like ArrayRecord, so a resume is exact."""

import os
import random
import signal
import subprocess
import sys
import time

import socket

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 40
TINY = ["--config=configs/simclr.py:digits", "--config.image_size=8",
        "--config.view_augment=random_resized_crop(8, area=(0.25, 1.0))"
        "|flip_lr|color_jitter(0.5, p=0.8)", "--config.eval_augment=resize(8)",
        "--config.batch_size=16", f"--config.num_train_steps={NUM_STEPS}",
        "--config.warmup_epochs=0", "--config.knn.every_steps=0",
        "--config.preview_images=0", "--config.model=tiny_resnet",
        "--config.width_multiplier=1", "--config.checkpoint_every_steps=3",
        "--config.log_every_steps=1"]


# --config.dataset=folder:<the digits as PNGs>, set once per module.
_DATA = []


@pytest.fixture(scope="module", autouse=True)
def digits_folder(tmp_path_factory):
  from contrastive_jax.data import digits  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("digits_png")
  digits.write_image_folder(str(root))
  _DATA[:] = [f"--config.dataset=folder:{root}"]
  yield
  _DATA.clear()


def start(workdir, *extra):
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  return subprocess.Popen(
      [sys.executable, "-m", "contrastive_jax.main", f"--workdir={workdir}",
       *TINY, *_DATA, *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def run(workdir, *extra):
  proc = start(workdir, *extra)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return err


def complete_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  # Orbax writes into a temporary name and renames when complete.
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def wait_for_checkpoint(proc, workdir, at_least, timeout=240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    steps = complete_steps(workdir)
    if steps and steps[-1] >= at_least:
      return steps[-1]
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    time.sleep(0.01)
  raise AssertionError(f"no checkpoint >= {at_least} in {timeout} s")


def read_state(workdir, step=None):
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=1,
                                    read_only=True)
  step = ckpt.latest_step() if step is None else step
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
      ckpt.state_metadata(step))
  state = jax.device_get(ckpt.restore(abstract, step=step))
  ckpt.close()
  return state


def assert_bit_identical(got, want):
  assert set(got) == set(want)
  paths = jax.tree_util.tree_flatten_with_path(want)[0]
  got_leaves = jax.tree.leaves(got)
  assert len(got_leaves) == len(paths)
  for (path, w), g in zip(paths, got_leaves):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w),
                                  err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits_folder):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  run(workdir)
  return read_state(workdir, NUM_STEPS)


def test_sigkill_then_sigterm_then_resume_is_bit_identical(
    tmp_path, uninterrupted):
  """One workdir, interrupted twice: SIGKILL after a random checkpoint,
  then the resumed run preempted by SIGTERM (it saves the next step and
  exits 0), then resumed to the end: bit-identical to the uninterrupted
  run."""
  workdir = str(tmp_path)
  kill_after = random.Random().randrange(3, NUM_STEPS // 3)
  proc = start(workdir)
  wait_for_checkpoint(proc, workdir, kill_after)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  resumed_from = complete_steps(workdir)[-1]
  print(f"killed after checkpoint {kill_after}; resuming from step "
        f"{resumed_from}")
  assert resumed_from < NUM_STEPS

  proc = start(workdir)
  wait_for_checkpoint(proc, workdir, resumed_from + 3)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert f"at step {resumed_from}" in err
  saved = complete_steps(workdir)[-1]
  assert resumed_from + 3 <= saved < NUM_STEPS
  assert f"Preempted: saved step {saved} of {NUM_STEPS}" in err

  run(workdir)
  state = read_state(workdir, NUM_STEPS)
  assert int(state["step"]) == NUM_STEPS
  assert_bit_identical(state, uninterrupted)


# Saves step 1, then step 2 with Orbax's final rename blocked: killed there,
# step 2's files are all written under a temporary name but not committed.
_KILLED_WRITE = """
import asyncio, os, sys
import jax, ml_collections, numpy as np
from orbax.checkpoint._src.path import atomicity
from contrastive_jax import checkpointing
ckpt = checkpointing.Checkpointer(sys.argv[1], save_every_steps=1, keep=3)
config = ml_collections.ConfigDict({"method": "simclr"})
state = {"w": np.arange(1000, dtype=np.float32), "step": np.int32(1)}
ckpt.save(1, state, config)
ckpt.wait()
async def never(*args, **kwargs):
  os.write(1, b"renaming\\n")
  await asyncio.sleep(3600)
atomicity.AtomicRenameTemporaryPath.finalize = never
ckpt.save(2, {"w": -state["w"], "step": np.int32(2)}, config)
ckpt.wait()
"""


def test_a_checkpoint_write_killed_midway_keeps_the_previous_one(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITE, workdir],
                          cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline()
    assert line == "renaming\n", proc.stderr.read()[-3000:]
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  names = os.listdir(os.path.join(workdir, "checkpoints"))
  assert any(not n.isdigit() for n in names), names  # the unfinished write
  assert complete_steps(workdir) == [1]
  state = read_state(workdir)
  assert int(state["step"]) == 1
  np.testing.assert_array_equal(state["w"], np.arange(1000, dtype=np.float32))


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  workdir = str(tmp_path)
  port = free_port()
  num_steps = 400
  procs = [start(workdir, f"--config.num_train_steps={num_steps}",
                 "--config.checkpoint_every_steps=5",
                 f"--coordinator_address=localhost:{port}",
                 "--num_processes=2", f"--process_id={i}") for i in (0, 1)]
  try:
    wait_for_checkpoint(procs[0], workdir, 5)
    procs[1].send_signal(signal.SIGTERM)  # the other one is not told
    errs = [p.communicate(timeout=180)[1] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-3000:]
  saved = complete_steps(workdir)[-1]
  assert 5 <= saved < num_steps
  for err in errs:  # both saved the same step, collectively
    assert f"Preempted: saved step {saved} of {num_steps}" in err

