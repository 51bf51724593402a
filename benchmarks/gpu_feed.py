"""Can the host feed the step? The real SimCLR ResNet-50 step fed from host
memory each step, against the same step on a batch already on the device.

The loop is shaped like train._train_loop: host batch ->
`parallel.global_batch` -> step, the previous step's loss read back one
step late (the non-finite guard's read). Per job, in interleaved rounds:

  on_device   one batch put on the device before the loop: the rate every
              other benchmark reports;
  host_fed    a new host batch (NumPy, float32, two alternating buffers)
              transferred every step: what the loop does with the
              pipeline's output.

Jobs: `simclr` (simclr:imagenet, views augmented on the host: the host
sends the views) and `simclr_aug` (augment_on_device: the host sends the
crops and their uniforms, the step runs the size-keeping ops). It prints
views/s of each and host_fed / on_device.

What it leaves out, and why: the tf.data pipeline itself. The GPU
machines have no TensorFlow and its wheel is far beyond what the device
tool carries (64 MiB), so the pipeline's rate is measured on a CPU
(`benchmarks/input_pipeline.py --device_augment`, views/s per core);
BENCHMARKS.md puts the two together: with P views/s per core on C cores,
the end-to-end rate is min(host_fed rate, C * P).

  python benchmarks/gpu_feed.py                 # on a GPU
  python benchmarks/gpu_feed.py --smoke         # CPU check: tiny ResNet

Imports no TensorFlow (benchmarks/run_gpu.sh installs ml_collections).
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import gpu_resnet50  # noqa: E402  pylint: disable=g-import-not-at-top
import harness  # noqa: E402  pylint: disable=g-import-not-at-top

# pylint: disable-next=g-import-not-at-top
from contrastive_jax import parallel  # noqa: E402

JOBS = ("simclr", gpu_resnet50.DEVICE_AUGMENT)
TARGET = 0.9  # issue 15: views/s with real input / on the device


def host_batches(batch, count: int = 2, seed: int = 0):
  """`count` host copies of `batch` (a dict of global arrays), each with
  its own values, as NumPy: distinct buffers, so no transfer is skipped."""
  host = jax.device_get(batch)
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    copy = {}
    for key, value in host.items():
      value = np.asarray(value)
      copy[key] = (rng.random(value.shape, dtype=np.float32)
                   if value.dtype == np.float32 else value.copy())
    out.append(copy)
  return out


def run_host_fed(job, batches, steps: int) -> float:
  """Seconds per step with a new host batch transferred every step."""
  mesh = job.bench.mesh
  jax.block_until_ready(job.state)
  start = time.perf_counter()
  previous = None
  with jax.set_mesh(mesh):
    for i in range(steps):
      batch = parallel.global_batch(batches[i % len(batches)], mesh)
      job.state, metrics = job.compiled(job.state, batch)
      if previous is not None:
        float(previous["loss"])  # Read one step late, as the loop does.
      previous = metrics
  jax.block_until_ready(previous)
  return (time.perf_counter() - start) / steps


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=None,
                      help="per-device batch (default 128; smoke 16)")
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--reps", type=int, default=None)
  parser.add_argument("--smoke", action="store_true",
                      help="tiny ResNet, 32 px: checks the script on CPU")
  args = parser.parse_args(argv)
  smoke = args.smoke
  n = args.batch or (16 if smoke else 128)
  steps = args.steps or (2 if smoke else 10)
  reps = args.reps or (1 if smoke else 3)
  image_size = 32 if smoke else 224
  num_devices = jax.device_count()
  device = jax.devices()[0]
  print(f"{device.device_kind} ({device.platform}) x{num_devices}, jax "
        f"{jax.__version__}; {'tiny_resnet' if smoke else 'resnet50'} "
        f"{image_size} px, bfloat16, per-device N={n}", flush=True)
  jobs, feeds = [], {}
  for name in JOBS:
    config = gpu_resnet50.job_config(
        name, batch_size=n * num_devices, image_size=image_size,
        model="tiny_resnet" if smoke else "resnet50", half_precision=True,
        cifar_stem=smoke, num_devices=num_devices)
    job = gpu_resnet50.Job(name, config)
    job.run(1)
    feeds[name] = host_batches(job.batch)
    run_host_fed(job, feeds[name], 1)
    megabytes = sum(v.nbytes for v in feeds[name][0].values()) / 2**20
    print(f"  {name}: compiled in {job.compile_s:.1f} s; {megabytes:.1f} "
          f"MiB from the host per step", flush=True)
    jobs.append(job)
  samples = {(job.name, feed): [] for job in jobs
             for feed in ("on_device", "host_fed")}
  for _ in range(reps):  # interleaved
    for job in jobs:
      samples[job.name, "on_device"].append(job.run(steps))
      samples[job.name, "host_fed"].append(
          run_host_fed(job, feeds[job.name], steps))
  rows = []
  for job in jobs:
    views = 2 * job.config.batch_size
    rate = {feed: views / sorted(s)[len(s) // 2]
            for (name, feed), s in samples.items() if name == job.name}
    ratio = rate["host_fed"] / rate["on_device"]
    rows.append([job.name, f"{rate['on_device']:.1f}",
                 f"{rate['host_fed']:.1f}", f"{ratio:.3f}",
                 "yes" if ratio >= TARGET else "NO"])
  print(harness.table(rows, ["job", "on_device views/s", "host_fed views/s",
                             "host_fed/on_device", f">={TARGET}"]))
  return rows


if __name__ == "__main__":
  main()
