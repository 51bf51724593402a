"""Does the train step ever wait for the input pipeline?

Runs the real SimCLR step (harness.build: as train.py builds it) in a loop
shaped like train._train_loop (next host batch -> parallel.global_batch ->
step, the previous step's loss read back one step late) in two ways, the
blocks of steps interleaved:

  real input     batches from the real pipeline (pipeline.pretrain_stream:
                 TFDS ArrayRecord read, PNG decode, the config's two views)
                 on a CIFAR-like dataset of real photos (bench_data.py);
  on device      one batch put on the device before the loop.

and prints, per setting, the step time of each and their ratio, and the time
the loop spent blocked in `next()` per step. A ratio near 1 and a blocked
time near 0 mean the pipeline keeps ahead of the step. On this CPU machine
the pipeline's threads and the step's share the same cores, so the ratio
also carries their competition for CPU; on a GPU/TPU host it would not.

  python benchmarks/input_wait.py
  python benchmarks/input_wait.py --settings=resnet18 --steps=4 --rounds=3

Settings (configs/simclr.py:cifar10 views, 32 px):
  resnet18   the cifar10 config's ResNet-18 (a slow step on CPU)
  tiny       a tiny ResNet at batch 256, ~15x cheaper per view: a harder
             test for the pipeline, which must then deliver ~500 views/s
             while the step uses the same cores
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import bench_data  # noqa: E402  pylint: disable=g-import-not-at-top
import harness  # noqa: E402  pylint: disable=g-import-not-at-top
import jax  # noqa: E402
import tensorflow as tf  # noqa: E402

from contrastive_jax import parallel  # noqa: E402
from contrastive_jax.data import pipeline, sources  # noqa: E402

SETTINGS = {
    'resnet18': dict(batch_size=32),
    'tiny': dict(batch_size=256, model='tiny_resnet', width_multiplier=2),
}


def _config(setting, dataset, data_dir):
  overrides = dict(SETTINGS[setting], dataset=dataset, data_dir=data_dir,
                   train_split='train', num_classes=bench_data.NUM_CLASSES)
  return harness.load_config('simclr:cifar10', **overrides)


def _stream(config):
  make = pipeline.pretrain_stream(
      source=sources.from_config(config, config.train_split),
      local_batch_size=config.batch_size,
      view_specs=(config.view_augment,
                  config.view_augment_2 or config.view_augment),
      seed=config.seed, process_index=0, process_count=1)
  return pipeline.as_numpy_iterator(make(0))


def _run_block(bench, state, steps, next_host_batch, device_batch):
  """`steps` steps as the training loop runs them. Returns (state, seconds
  per step, seconds blocked in next() per step)."""
  blocked, previous = 0.0, None
  start = time.perf_counter()
  for _ in range(steps):
    if next_host_batch is None:
      batch = device_batch
    else:
      t = time.perf_counter()
      host = next_host_batch()
      blocked += time.perf_counter() - t
      batch = parallel.global_batch(host, bench.mesh)
    state, metrics = bench.step(state, batch)
    if previous is not None:
      jax.device_get(previous['loss'])  # The loop's one-step-late check.
    previous = metrics
  jax.block_until_ready(state)
  return state, (time.perf_counter() - start) / steps, blocked / steps


def measure(setting, dataset, data_dir, steps, rounds):
  config = _config(setting, dataset, data_dir)
  bench = harness.build(config)
  batches = _stream(config)
  with jax.set_mesh(bench.mesh):
    state = bench.init(jax.random.PRNGKey(0))
    device_batch = parallel.global_batch(next(batches), bench.mesh)
    # Compile and warm both paths (and fill the pipeline's prefetch).
    state, _, _ = _run_block(bench, state, 2, lambda: next(batches), None)
    state, _, _ = _run_block(bench, state, 1, None, device_batch)
    real, fixed, blocked = [], [], []
    for _ in range(rounds):
      state, t, b = _run_block(bench, state, steps, lambda: next(batches),
                               None)
      real.append(t)
      blocked.append(b)
      state, t, _ = _run_block(bench, state, steps, None, device_batch)
      fixed.append(t)
  views = 2 * config.batch_size
  real_s, fixed_s = statistics.median(real), statistics.median(fixed)
  return [setting, config.model, config.batch_size,
          round(1e3 * fixed_s, 1), round(1e3 * real_s, 1),
          round(real_s / fixed_s, 3), round(1e3 * statistics.median(blocked), 2),
          round(views / fixed_s, 1)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--settings', default='resnet18,tiny')
  parser.add_argument('--steps', type=int, default=4,
                      help='steps per block')
  parser.add_argument('--rounds', type=int, default=3,
                      help='interleaved (real, on-device) block pairs')
  parser.add_argument('--examples', type=int, default=2048)
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')  # tf.data only.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  rows = []
  with tempfile.TemporaryDirectory() as data_dir:
    dataset = bench_data.tiny_dataset(data_dir, count=args.examples)
    for setting in args.settings.split(','):
      rows.append(measure(setting, dataset, data_dir, args.steps,
                          args.rounds))
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s), '
        f'{os.cpu_count()} cores; medians of {args.rounds} blocks of '
        f'{args.steps} steps')
  print(harness.table(rows, [
      'setting', 'model', 'batch', 'on-device ms/step', 'real-input ms/step',
      'ratio', 'blocked in next() ms/step', 'step views/s']))


if __name__ == '__main__':
  main()
