"""Compile time of the first train step of every config variant.

For each `configs/FILE.py:VARIANT` the real step (as train.py builds it) is
lowered and compiled for abstract inputs (the state from `jax.eval_shape` of
the state initialiser, the batch as ShapeDtypeStructs): no data, no
parameters, no checkpoint. linear_eval/finetune use `pretrained='random'`
(the config's own architecture), so they need no pretraining run either.

By default one variant per distinct (method, model, image size, optimizer),
the first listed: variants that differ only in epochs, learning rate or
queue length compile the same program up to constants. `--all` compiles
every variant; `--variants simclr:imagenet moco_v2:cifar10` picks some.

Batch sizes are the configs' own global batches, on this machine's devices
(`--batch` overrides them). MoCo's shuffle-BN needs two BN groups in all: on
one device the ImageNet variants (one group per device) get
bn_groups_per_device=8, as their docstring advises.

  python benchmarks/compile_time.py
  python benchmarks/compile_time.py --all
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

_HERE = os.path.dirname(os.path.abspath(__file__))
# This directory, and the repo root for contrastive_jax when not installed.
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import harness  # noqa: E402  pylint: disable=g-import-not-at-top

# Every variant each config's get_config accepts (see the configs'
# docstrings); the classifier configs take DATASET[_moco][_Npct].
VARIANTS = {
    "barlow_twins": ["imagenet", "cifar10", "digits"],
    "byol": ["imagenet1000", "imagenet", "multicrop", "cifar10", "digits",
             "digits_multicrop"],
    "dino": ["vit_small", "r50", "cifar10", "digits"],
    "simclr": ["cifar10", "imagenet", "imagenet1000", "digits"],
    "simsiam": ["imagenet", "cifar10", "digits"],
    "vicreg": ["imagenet", "cifar10", "digits"],
    "moco_v1": ["cifar10", "imagenet", "digits"],
    "moco_v2": ["cifar10", "imagenet", "imagenet800", "digits"],
    "moco_v3": ["r50", "r50_300", "r50_1000", "vit_small", "vit_base",
                "cifar10", "digits"],
    "linear_eval": ["cifar10", "imagenet", "digits", "cifar10_moco",
                    "imagenet_moco", "digits_moco", "imagenet_mocov3",
                    "imagenet_mocov3_vit", "imagenet_1pct",
                    "imagenet_10pct"],
    "finetune": ["cifar10", "imagenet", "digits", "imagenet_1pct",
                 "imagenet_10pct", "cifar10_10pct"],
}


def all_specs() -> list[str]:
  files = harness.config_files()
  missing = sorted(set(files) - set(VARIANTS))
  if missing:
    raise SystemExit(f"configs without a variant list here: {missing}; add "
                     "them to VARIANTS in benchmarks/compile_time.py")
  return [f"{f}:{v}" for f in files for v in VARIANTS[f]]


def _signature(config):
  return (config.method, config.model, config.width_multiplier,
          config.image_size, config.optimizer)


def default_specs() -> list[str]:
  """The first variant of each distinct signature."""
  seen, specs = set(), []
  for spec in all_specs():
    sig = _signature(harness.load_config(spec))
    if sig not in seen:
      seen.add(sig)
      specs.append(spec)
  return specs


def compile_step(spec: str, *, batch_size: int | None = None):
  """(config, seconds to lower, seconds to compile) of the spec's step."""
  overrides = {} if batch_size is None else {"batch_size": batch_size}
  config = harness.fit_to_devices(harness.load_config(spec, **overrides),
                                  jax.device_count())
  bench = harness.build(config)
  with jax.set_mesh(bench.mesh):
    state, batch = bench.abstract_state(), bench.abstract_batch()
    start = time.perf_counter()
    lowered = bench.step.lower(state, batch)
    lowered_s = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - start
  return config, lowered_s, compile_s


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  group = parser.add_mutually_exclusive_group()
  group.add_argument("--all", action="store_true",
                     help="every variant of every config")
  group.add_argument("--variants", nargs="+",
                     help="FILE:VARIANT specs, e.g. simclr:imagenet")
  parser.add_argument("--batch", type=int, default=None,
                      help="global batch instead of each config's own")
  args = parser.parse_args(argv)
  specs = (all_specs() if args.all else args.variants or default_specs())

  # Backend start-up is not any step's compile time.
  jax.jit(lambda x: x + 1).lower(jnp.zeros(())).compile()
  note = ("" if args.all or args.variants
          else " (one per method/model; --all for every one)")
  print(f"{jax.devices()[0].device_kind} x{jax.device_count()}, jax "
        f"{jax.__version__}; {len(specs)} variants{note}", flush=True)
  rows = []
  for spec in specs:
    config, lower_s, compile_s = compile_step(spec, batch_size=args.batch)
    rows.append([spec, config.method, config.model, config.image_size,
                 config.batch_size, round(lower_s, 2), round(compile_s, 2)])
    print(f"  {spec}: lower {lower_s:.1f} s, compile {compile_s:.1f} s",
          flush=True)
  print(harness.table(rows, ["config:variant", "method", "model", "px",
                             "batch", "lower s", "compile s"]))
  return rows


if __name__ == "__main__":
  main()
