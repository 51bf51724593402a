"""A checkpoint written on 8 devices continues on 1, 2 and 4 devices and on
2 processes x 2 devices; the 2-process run matches the 1-process 4-device
run (loss curve, final parameters) while each process reads only its own
columns of every global batch."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing, train
from contrastive_jax.config import lib as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST, TOTAL = 2, 6
OVERRIDES = dict(image_size=8, view_augment="random_resized_crop(8)|flip_lr",
                 eval_augment="resize(8)", batch_size=16, warmup_epochs=0.0,
                 preview_images=0, model="tiny_resnet", width_multiplier=1,
                 checkpoint_every_steps=2, log_every_steps=1,
                 async_checkpointing=False)


def digits_config(num_steps):
  c = config_lib.load("simclr:digits")
  c.update(OVERRIDES)
  c.knn.every_steps = 0
  c.num_train_steps = num_steps
  return c


def cli_overrides(num_steps):
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  return flags + ["--config.knn.every_steps=0",
                  f"--config.num_train_steps={num_steps}"]


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def host(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def saved_state(workdir, step):
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=1,
                                    read_only=True)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
      ckpt.state_metadata(step))
  return ckpt.restore(abstract, step=step)


@pytest.fixture(scope="module")
def eight_device_checkpoint(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("on8"))
  train.train_and_evaluate(digits_config(FIRST), workdir,
                           devices=jax.devices()[:8])
  return workdir


@pytest.fixture(scope="module")
def continued_on_4(eight_device_checkpoint, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("on4"))
  shutil.copytree(eight_device_checkpoint, workdir, dirs_exist_ok=True)
  state = train.train_and_evaluate(digits_config(TOTAL), workdir,
                                   devices=jax.devices()[:4])
  return workdir, state


@pytest.mark.parametrize("num_devices", [1, 2])
def test_eight_device_checkpoint_continues_on_fewer_devices(
    eight_device_checkpoint, continued_on_4, tmp_path, num_devices):
  workdir = str(tmp_path)
  shutil.copytree(eight_device_checkpoint, workdir, dirs_exist_ok=True)
  devices = jax.devices()[:num_devices]
  state = train.train_and_evaluate(digits_config(TOTAL), workdir,
                                   devices=devices)
  assert int(state.step) == TOTAL
  # Restored into the current mesh: replicated over exactly these devices.
  for leaf in jax.tree.leaves(state):
    assert leaf.sharding.device_set == set(devices)
  on4_dir, on4 = continued_on_4
  assert int(on4.step) == TOTAL
  for a, b in zip(host(state.params), host(on4.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  got, want = losses(workdir), losses(on4_dir)
  for step in range(FIRST + 1, TOTAL + 1):
    np.testing.assert_allclose(got[step], want[step], rtol=1e-5)


def test_two_processes_continue_the_checkpoint_as_one_4_device_run(
    eight_device_checkpoint, continued_on_4, tmp_path):
  workdir = str(tmp_path / "two_processes")
  shutil.copytree(eight_device_checkpoint, workdir)
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "launch", "multi_process.py"),
       "--local=2", "--", "--config=configs/simclr.py:digits",
       f"--workdir={workdir}", *cli_overrides(TOTAL)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert "4 devices over 2 processes" in result.stdout
  for i in (0, 1):  # both processes restored step 2 into the new mesh
    assert any(l.startswith(f"[{i}] ") and f"at step {FIRST}" in l
               and "Resumed from" in l for l in result.stdout.splitlines())
  # Only process 0 wrote metrics: every step once.
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f if '"loss"' in line]
  assert steps == list(range(1, TOTAL + 1))
  on4_dir, on4 = continued_on_4
  got, want = losses(workdir), losses(on4_dir)
  for step in range(FIRST + 1, TOTAL + 1):
    np.testing.assert_allclose(got[step], want[step], rtol=1e-5)
  two = saved_state(workdir, TOTAL)
  assert int(two["step"]) == TOTAL
  for a, b in zip(host(two["params"]), host(on4.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
