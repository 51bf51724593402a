"""ResNet-50 throughput and MFU of SimCLR, MoCo v2 and a supervised step.

Three real train steps (built as train.py builds them) from the ImageNet
configs, bfloat16 compute (config.half_precision), synthetic device-resident
batches, in one run:

  simclr:imagenet     views/s  (2 views per image)
  moco_v2:imagenet    views/s  (query view + key view per image)
  finetune:imagenet   images/s (supervised: the same encoder + a linear
                      classifier, random init, global BN)

MFU = FLOPs per step / step time / peak bf16 FLOP/s of the devices. FLOPs
come from XLA's cost analysis of the step (per device), cross-checked
against an analytic count of the encoder's convolutions (ResNet-50: 4.1
GMAC forward per 224 px image, training 3x forward; XLA leaves out taps on
the padding and adds BN/ReLU/head/loss). On GPU XLA's count misses the
cuDNN convolutions (2% of the analytic count on an H200), and MFU then uses
the analytic count: the "MFU from" column says which. Targets:
SimCLR views/s >= 90% of supervised images/s, MFU >= 35%.

`--device_augment` adds the job simclr_aug: the SimCLR step with
`augment_on_device` (the size-keeping ops of simclr:imagenet's view, flip,
colour jitter, grayscale, blur, run in the step by data/device_ops.py), on
a device-resident batch of crops and their uniforms, timed beside the plain
step in the same rounds; it prints the time the ops add to a step and the
ops alone (jit(shard_map(augment)) on the same batch).

Needs no TensorFlow, TFDS, clu (see benchmarks/run_gpu.sh for the one
package to carry, ml_collections).

  python benchmarks/gpu_resnet50.py                      # on a GPU
  python benchmarks/gpu_resnet50.py --smoke              # CPU check: tiny
                                                         # ResNet, 32 px
  python benchmarks/gpu_resnet50.py --jobs simclr --device_augment
"""

import argparse
import os
import sys
import time

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

_HERE = os.path.dirname(os.path.abspath(__file__))
# This directory, and the repo root for contrastive_jax when not installed.
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import flops as flops_lib  # noqa: E402  pylint: disable=g-import-not-at-top
import harness  # noqa: E402  pylint: disable=g-import-not-at-top

# pylint: disable=g-import-not-at-top
from contrastive_jax import parallel  # noqa: E402
from contrastive_jax.data import device_augment  # noqa: E402
# pylint: enable=g-import-not-at-top

SUPERVISED = "supervised"
DEVICE_AUGMENT = "simclr_aug"
# name, config spec, how many encoder passes of each kind per image
# (train: forward+backward, forward: forward only), what the rate counts.
JOBS = {
    "simclr": ("simclr:imagenet", 2, 0, "views"),
    "moco_v2": ("moco_v2:imagenet", 1, 1, "views"),
    SUPERVISED: ("finetune:imagenet", 1, 0, "images"),
    DEVICE_AUGMENT: ("simclr:imagenet", 2, 0, "views"),
}
DEFAULT_JOBS = ("simclr", "moco_v2", SUPERVISED)
TARGET_SIMCLR_VS_SUPERVISED = 0.90
TARGET_MFU = 0.35


def job_config(name: str, *, batch_size: int, image_size: int, model: str,
               half_precision: bool, cifar_stem: bool, num_devices: int):
  spec = JOBS[name][0]
  config = harness.load_config(
      spec, batch_size=batch_size, image_size=image_size, model=model,
      half_precision=half_precision, cifar_stem=cifar_stem,
      # A short run's schedule; the step's cost does not depend on it.
      num_train_steps=1000, warmup_epochs=0.0)
  if name == DEVICE_AUGMENT:
    # The recipe's size-keeping ops after a resize to the benchmark's size
    # (load_config replaced the views by a plain resize).
    tail = device_augment.size_keeping_tail(
        harness.load_config(spec).view_augment)
    config.view_augment = f"resize({image_size})|{tail}"
    config.augment_on_device = True
  return harness.fit_to_devices(config, num_devices)


class Job:
  """One method's compiled step, its state and batch, and its timings."""

  def __init__(self, name: str, config):
    self.name, self.config = name, config
    self.bench = harness.build(config)
    self.batch = harness.synthetic_batch(config, self.bench.mesh)
    self.augment = self.bench.built.augment
    if self.augment is not None:
      self.batch.update(synthetic_uniforms(self.augment.num_uniforms,
                                           config.batch_size,
                                           self.bench.mesh))
    with jax.set_mesh(self.bench.mesh):
      start = time.perf_counter()
      lowered = self.bench.step.lower(self.bench.abstract_state(),
                                      _abstract(self.batch))
      self.compiled = lowered.compile()
      self.compile_s = time.perf_counter() - start
      self.state = self.bench.init(jax.random.PRNGKey(0))
    # Before the backend's passes where the backend analyses that (CPU);
    # else the compiled program's, whose cuDNN convolutions count for
    # nothing on GPU (see `_flops_for_mfu`).
    self.xla_flops = (harness.cost_flops(lowered)
                      or harness.cost_flops(self.compiled))
    self.samples: list[float] = []

  def run(self, steps: int) -> float:
    """Seconds per step over `steps` back-to-back steps."""
    jax.block_until_ready(self.state)
    start = time.perf_counter()
    metrics = None
    for _ in range(steps):
      self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps

  def time_augment(self, steps: int, reps: int) -> float:
    """Median seconds per call of the device ops alone on this job's batch,
    sharded as in the step."""
    mesh = self.bench.mesh
    spec = P(parallel.DATA_AXIS)
    run = jax.jit(jax.shard_map(self.augment, mesh=mesh, in_specs=spec,
                                out_specs=spec))
    timer = harness.Timer()
    with jax.set_mesh(mesh):
      jax.block_until_ready(run(self.batch))  # Compile.
      for _ in range(reps):
        timer.measure("augment", lambda: run(self.batch), calls=steps)
    return timer.median("augment")


def synthetic_uniforms(counts, batch_size: int, mesh, seed: int = 1):
  """'uniforms{i}' float32 [B, counts[i - 1]] in [0, 1), on the devices:
  what the pipeline draws for view i with augment_on_device."""
  rng = np.random.default_rng(seed)
  return jax.device_put(
      {f"uniforms{i + 1}": rng.random((batch_size, n), dtype=np.float32)
       for i, n in enumerate(counts)}, parallel.batch_sharded(mesh))


def _abstract(batch):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      batch)


def analytic_flops_per_step(name: str, config, num_devices: int) -> float:
  """Encoder FLOPs per device per step: convolutions only (no BN, head,
  loss or optimizer)."""
  _, train_passes, forward_passes, _ = JOBS[name]
  per_image = flops_lib.encoder_forward_macs(
      config.model, image_size=config.image_size,
      width_multiplier=config.width_multiplier,
      cifar_stem=config.cifar_stem) * 2
  images = config.batch_size / num_devices
  return images * per_image * (flops_lib.TRAIN_FACTOR * train_passes
                               + forward_passes)


def _flops_for_mfu(xla: float | None, analytic: float) -> tuple[float, str]:
  """XLA's count where it is credible, else the analytic one.

  On GPU (jax 0.11, H200) XLA's analysis saw ~2% of the analytic FLOPs of a
  ResNet-50 step: its convolutions are cuDNN calls it does not count. It
  may not fall below the analytic count of the convolutions by more than
  the taps on the padding (~4% at 224 px).
  """
  if xla and xla >= 0.8 * analytic:
    return xla, "XLA"
  return analytic, "analytic"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=None,
                      help="per-device batch N of images (default 128; "
                      "smoke 16); SimCLR and MoCo encode 2N views")
  parser.add_argument("--supervised_batch", type=int, default=None,
                      help="per-device supervised batch (default 2N: the "
                      "views a SimCLR step encodes)")
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps per sample (default 10; smoke 2)")
  parser.add_argument("--reps", type=int, default=None,
                      help="interleaved samples per job (default 3; smoke 1)")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps after compiling")
  parser.add_argument("--image_size", type=int, default=None)
  parser.add_argument("--model", default=None)
  parser.add_argument("--no_half_precision", action="store_true",
                      help="float32 compute (MFU is still against the bf16 "
                      "peak unless --peak_tflops)")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="peak dense bf16 TFLOP/s per device (default: "
                      "from the device kind)")
  parser.add_argument("--jobs", nargs="+", default=list(DEFAULT_JOBS),
                      choices=list(JOBS))
  parser.add_argument("--device_augment", action="store_true",
                      help=f"add {DEVICE_AUGMENT}: the SimCLR step with "
                      "the size-keeping augmentations on the device, timed "
                      "beside simclr")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny ResNet, 32 px, CIFAR stem, small batch: "
                      "checks the script on CPU")
  args = parser.parse_args(argv)
  smoke = args.smoke
  n = args.batch or (16 if smoke else 128)
  steps = args.steps or (2 if smoke else 10)
  reps = args.reps or (1 if smoke else 3)
  image_size = args.image_size or (32 if smoke else 224)
  model = args.model or ("tiny_resnet" if smoke else "resnet50")
  num_devices = jax.device_count()
  device = jax.devices()[0]
  peak = flops_lib.device_peak_flops(device, args.peak_tflops)

  print(f"{device.device_kind} ({device.platform}) x{num_devices}, jax "
        f"{jax.__version__}; {model} {image_size} px, "
        f"{'float32' if args.no_half_precision else 'bfloat16'}, "
        f"per-device N={n}; peak "
        f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (no MFU)'}",
        flush=True)
  jobs = []
  names = list(args.jobs)
  if args.device_augment:
    names += [n for n in ("simclr", DEVICE_AUGMENT) if n not in names]
  for name in names:
    per_device = (args.supervised_batch or 2 * n) if name == SUPERVISED else n
    config = job_config(name, batch_size=per_device * num_devices,
                        image_size=image_size, model=model,
                        half_precision=not args.no_half_precision,
                        cifar_stem=smoke, num_devices=num_devices)
    job = Job(name, config)
    for _ in range(args.warmup):
      job.run(1)
    print(f"  {name}: {JOBS[name][0]}, global batch {config.batch_size}, "
          f"compiled in {job.compile_s:.1f} s", flush=True)
    jobs.append(job)
  for _ in range(reps):  # interleaved
    for job in jobs:
      job.samples.append(job.run(steps))

  rows, rate = [], {}
  for job in jobs:
    _, train_passes, forward_passes, unit = JOBS[job.name]
    step_s = sorted(job.samples)[len(job.samples) // 2]
    per_step = job.config.batch_size * (train_passes + forward_passes)
    rate[job.name] = per_step / step_s
    analytic = analytic_flops_per_step(job.name, job.config, num_devices)
    flops, source = _flops_for_mfu(job.xla_flops, analytic)
    mfu = flops_lib.mfu(flops, step_s, peak) if peak else None
    rows.append([
        job.name, job.config.batch_size, step_s * 1e3,
        f"{rate[job.name]:.1f} {unit}/s",
        f"{job.xla_flops / 1e9:.1f}" if job.xla_flops else "n/a",
        f"{analytic / 1e9:.1f}",
        f"{job.xla_flops / analytic:.2f}" if job.xla_flops else "n/a",
        source, f"{100 * mfu:.1f}%" if mfu is not None else "n/a",
        ("yes" if mfu >= TARGET_MFU else "NO") if mfu is not None else "n/a",
    ])
  print(harness.table(rows, [
      "job", "global batch", "step ms", "rate", "XLA GFLOP/step/dev",
      "analytic GFLOP", "XLA/analytic", "MFU from", "MFU",
      f"MFU>={TARGET_MFU:.0%}"]))
  if "simclr" in rate and DEVICE_AUGMENT in rate:
    _print_device_augment(jobs, steps, reps)
  if "simclr" in rate and SUPERVISED in rate:
    ratio = rate["simclr"] / rate[SUPERVISED]
    print(f"SimCLR views/s / supervised images/s = {ratio:.3f} (target >= "
          f"{TARGET_SIMCLR_VS_SUPERVISED:.2f}: "
          f"{'met' if ratio >= TARGET_SIMCLR_VS_SUPERVISED else 'NOT met'})")
  return rows, rate


def _print_device_augment(jobs, steps: int, reps: int):
  """The step time the device ops add (simclr_aug vs simclr, medians of
  the same interleaved rounds) and the ops alone."""
  median = {job.name: sorted(job.samples)[len(job.samples) // 2]
            for job in jobs}
  job = next(j for j in jobs if j.name == DEVICE_AUGMENT)
  added = median[DEVICE_AUGMENT] - median["simclr"]
  alone = job.time_augment(steps, reps)
  views = 2 * job.config.batch_size
  print(f"device augmentation ({job.config.view_augment}): "
        f"{added * 1e3:+.2f} ms/step "
        f"({100 * added / median['simclr']:+.1f}% of simclr); the ops "
        f"alone {alone * 1e3:.2f} ms/step, {alone / views * 1e6:.2f} "
        f"us/view")


if __name__ == "__main__":
  main()
