"""What the contrastive machinery costs beside the encoder.

Times the real train steps (built as train.py builds them: method step inside
guards.skip_nonfinite inside parallel.shard_train_step, optimizer from the
config) against the encoder alone:

  SimCLR step / encoder forward+backward on the same 2N images   target <= 1.05
  MoCo step   / (query forward+backward on N + key forward on N)  target <= 1.10
  BYOL step   / (online forward+backward on each view's N +
                 target forward on each view's N)                 target <= 1.10

so the head, loss, all_gather, EMA, queue, shuffle-BN, optimizer, guard and
metrics together should cost at most 5% (10%) of the step (BYOL: projector,
predictor, loss, EMA, optimizer, guard, metrics). The baselines use the
encoder the method builds (models.create_encoder with the same dtype and
BatchNorm: global BN for SimCLR and BYOL, per-group BN for MoCo's query, the
key encoder's BN for its forward), in training mode, on the same mesh; BYOL's
runs each view on its own, as the step does (BN statistics per view).

Candidates are interleaved rep by rep and medians are reported: the machine
may be shared.

  python benchmarks/step_overhead.py                    # CIFAR-10 configs
  python benchmarks/step_overhead.py --batch 32 --reps 9
"""

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

_HERE = os.path.dirname(os.path.abspath(__file__))
# This directory, and the repo root for contrastive_jax when not installed.
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import harness  # noqa: E402  pylint: disable=g-import-not-at-top

from contrastive_jax import models, parallel  # noqa: E402

TARGETS = {"simclr": 1.05, "moco": 1.10, "byol": 1.10, "simsiam": 1.10,
           "moco_v3": 1.10, "barlow_twins": 1.10, "vicreg": 1.10,
           "dino": 1.10}


def _encoder(config, *, bn_groups=None):
  """The encoder as the methods build it."""
  return models.encoder_from_config(config, bn_axis_name=parallel.DATA_AXIS,
                                    bn_groups=bn_groups)


def _init(encoder, config):
  s = config.image_size
  return jax.jit(encoder.init, static_argnames="train")(
      jax.random.PRNGKey(0), jnp.zeros((2, s, s, 3)), train=False)


def _fwd_bwd(encoder, variables, images):
  """Gradient of a scalar of h w.r.t. the encoder's params, and the new BN
  statistics: the encoder's share of a training step."""

  def loss(params):
    h, new = encoder.apply({"params": params,
                            "batch_stats": variables["batch_stats"]},
                           images, train=True, mutable=["batch_stats"])
    return jnp.mean(jnp.square(h)), new["batch_stats"]

  return jax.grad(loss, has_aux=True)(variables["params"])


def _forward(encoder, variables, images):
  h, new = encoder.apply(jax.lax.stop_gradient(variables), images,
                         train=True, mutable=["batch_stats"])
  return h, new["batch_stats"]


def _sharded(fn, mesh, out_specs):
  """jit(shard_map(fn)): variables replicated, images split over 'data'."""
  return jax.jit(jax.shard_map(
      fn, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
      out_specs=out_specs))


def simclr_baseline(config, mesh, batch):
  encoder = _encoder(config)
  variables = _init(encoder, config)
  images = jnp.concatenate([batch["view1"], batch["view2"]], axis=0)
  images = jax.device_put(images, parallel.batch_sharded(mesh))
  fn = _sharded(functools.partial(_fwd_bwd, encoder), mesh, (P(), P()))
  return fn, (variables, images)


def moco_baseline(config, mesh, batch):
  query = _encoder(config, bn_groups=config.bn_groups_per_device)
  key = query if config.key_bn != "sync" else _encoder(config)
  variables = _init(query, config)

  def step(variables, views):
    grads, stats = _fwd_bwd(query, variables, views[0])
    k, key_stats = _forward(key, variables, views[1])
    return grads, stats, k, key_stats

  fn = _sharded(step, mesh, (P(), P(), P(parallel.DATA_AXIS), P()))
  return fn, (variables, (batch["view1"], batch["view2"]))


def _per_view_fwd_bwd(encoder, variables, views):
  """Both views through one encoder, each normalised on its own, the second
  starting from the statistics the first left (as BYOL's and SimSiam's
  steps): the gradient and the new statistics."""

  def online(params):
    stats, total = variables["batch_stats"], 0.0
    for view in views:
      h, new = encoder.apply({"params": params, "batch_stats": stats},
                             view, train=True, mutable=["batch_stats"])
      stats, total = new["batch_stats"], total + jnp.mean(jnp.square(h))
    return total, stats

  return jax.grad(online, has_aux=True)(variables["params"])


def byol_baseline(config, mesh, batch):
  encoder = _encoder(config)
  variables = _init(encoder, config)

  def step(variables, views):
    grads, stats = _per_view_fwd_bwd(encoder, variables, views)
    target_stats, targets = variables["batch_stats"], []
    for view in views:
      h, target_stats = _forward(
          encoder, {**variables, "batch_stats": target_stats}, view)
      targets.append(h)
    return grads, stats, targets, target_stats

  fn = _sharded(step, mesh, (P(), P(), [P(parallel.DATA_AXIS)] * 2, P()))
  return fn, (variables, (batch["view1"], batch["view2"]))


def simsiam_baseline(config, mesh, batch):
  encoder = _encoder(config)
  variables = _init(encoder, config)
  fn = _sharded(functools.partial(_per_view_fwd_bwd, encoder), mesh,
                (P(), P()))
  return fn, (variables, (batch["view1"], batch["view2"]))


def dino_baseline(config, mesh, batch):
  """DINO's encoder work: the student forward and backward on each
  resolution's crops together, the teacher forward on the 2 global ones
  (MultiCropWrapper's grouping)."""
  encoder = _encoder(config)
  variables = _init(encoder, config)

  def step(variables, views):
    groups = [jnp.concatenate(views[:2]), *views[2:]]
    grads, stats = _per_view_fwd_bwd(encoder, variables, groups)
    h, target_stats = _forward(encoder, variables, groups[0])
    return grads, stats, h, target_stats

  views = [batch[f"view{v}"] for v in range(1, len(batch) + 1)
           if f"view{v}" in batch]
  fn = _sharded(step, mesh, (P(), P(), P(parallel.DATA_AXIS), P()))
  return fn, (variables, views)


BASELINES = {
    "simclr": (simclr_baseline, "encoder fwd+bwd 2N"),
    "moco": (moco_baseline, "query fwd+bwd N + key fwd N"),
    "byol": (byol_baseline, "online fwd+bwd 2x N + target fwd 2x N"),
    "simsiam": (simsiam_baseline, "encoder fwd+bwd 2x N"),
    # The base and momentum networks: the same encoder work as BYOL's.
    "moco_v3": (byol_baseline, "base fwd+bwd 2x N + momentum fwd 2x N"),
    # One network, each view on its own, as SimSiam's.
    "barlow_twins": (simsiam_baseline, "encoder fwd+bwd 2x N"),
    "vicreg": (simsiam_baseline, "encoder fwd+bwd 2x N"),
    "dino": (dino_baseline, "student fwd+bwd 2N (+ local crops) + teacher "
             "fwd 2N"),
}


# --ablate: the step again without one part each, timed in the same reps,
# to see where an overhead comes from: (label, config overrides, guard).
ABLATIONS = (
    ("no guard", {}, False),
    ("SGD, not LARS", {"optimizer": "sgd"}, True),
    ("no online probe", {"online_probe": False}, True),
)


def measure(spec: str, *, batch_size: int, reps: int, calls: int,
            overrides: dict, ablate: bool = False):
  config = harness.load_config(spec, batch_size=batch_size, **overrides)
  mesh = parallel.make_data_mesh()
  bench = harness.build(config, mesh)
  batch = harness.synthetic_batch(config, mesh)
  runner = harness.StepRunner(bench, batch)
  ablations = {}
  for label, changes, guard in ABLATIONS if ablate else ():
    if "optimizer" in changes and changes["optimizer"] == config.optimizer:
      continue
    variant = harness.load_config(spec, batch_size=batch_size,
                                  **{**overrides, **changes})
    ablations[label] = harness.StepRunner(
        harness.build(variant, mesh, guard=guard), batch)
  make_baseline = BASELINES[config.method][0]
  with jax.set_mesh(mesh):
    base_fn, base_args = make_baseline(config, mesh, batch)
    baseline = lambda: base_fn(*base_args)
    start = time.perf_counter()
    jax.block_until_ready((runner(), baseline(),
                           [r() for r in ablations.values()]))  # compile
    compile_s = time.perf_counter() - start
    # XLA's own count of the work (deterministic, unlike the timings):
    # FLOPs of the lowered HLO (every convolution counts), bytes of the
    # compiled program (after fusion; on GPU without cuDNN/cuBLAS calls).
    lowered = {"step": bench.step.lower(bench.abstract_state(),
                                        bench.abstract_batch()),
               "baseline": base_fn.lower(*base_args)}
    cost = {k: {"flops": harness.cost(v).get("flops"),
                "bytes accessed": harness.cost(v.compile()).get(
                    "bytes accessed")}
            for k, v in lowered.items()}
    timer = harness.Timer()
    for _ in range(reps):
      timer.measure("step", runner, calls)
      timer.measure("baseline", baseline, calls)
      for label, ablated in ablations.items():
        timer.measure(label, ablated, calls)
  nonfinite = float(jax.device_get(runner.metrics["nonfinite_steps"]))
  if nonfinite:
    print(f"warning: {spec}: the last step was skipped as non-finite")
  return config, timer, compile_s, cost


def _ratio(cost, key):
  step, base = cost["step"].get(key), cost["baseline"].get(key)
  return step / base if step and base else "n/a"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", nargs="+",
                      default=["simclr:cifar10", "moco_v2:cifar10",
                               "byol:cifar10", "simsiam:cifar10",
                               "moco_v3:cifar10"])
  parser.add_argument("--batch", type=int, default=32,
                      help="global batch N (images; SimCLR encodes 2N views)")
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--calls", type=int, default=1,
                      help="back-to-back calls per timed sample")
  parser.add_argument("--half_precision", action="store_true")
  parser.add_argument("--ablate", action="store_true",
                      help="also time the step without the guard, with SGD "
                      "instead of LARS, and without the online probe")
  args = parser.parse_args(argv)
  overrides = {"half_precision": True} if args.half_precision else {}

  rows = []
  print(f"{jax.devices()[0].device_kind} x{jax.device_count()}, global batch "
        f"N={args.batch}, {args.reps} reps x {args.calls} calls")
  for spec in args.configs:
    config, timer, compile_s, cost = measure(
        spec, batch_size=args.batch, reps=args.reps, calls=args.calls,
        overrides=overrides, ablate=args.ablate)
    step, base = timer.median("step"), timer.median("baseline")
    target = TARGETS[config.method]
    baseline_name = BASELINES[config.method][1]
    ratio = step / base
    # Each step sample next to the baseline sample taken right after it:
    # robust to load that drifts over the run.
    paired = statistics.median(
        s / b for s, b in zip(timer.samples["step"],
                              timer.samples["baseline"]))
    rows.append([spec, config.model, baseline_name, step * 1e3, base * 1e3,
                 ratio, paired, f"<= {target:.2f}",
                 "yes" if ratio <= target else "NO",
                 _ratio(cost, "flops"), _ratio(cost, "bytes accessed")])
    samples = {k: sorted(round(s * 1e3, 1) for s in v)
               for k, v in timer.samples.items()}
    print(f"  {spec}: compiled in {compile_s:.1f} s; step samples (ms) "
          f"{samples['step']}; baseline {samples['baseline']}", flush=True)
    for label in timer.samples:
      if label not in ("step", "baseline"):
        ablated = timer.median(label)
        print(f"    ablation: step with {label}: {ablated * 1e3:.2f} ms "
              f"({ablated / base:.3f} x baseline)")
  print(harness.table(rows, ["config", "model", "baseline", "step ms",
                             "baseline ms", "ratio", "paired ratio", "target",
                             "met",
                             "HLO flops ratio", "compiled bytes ratio"]))
  return rows


if __name__ == "__main__":
  main()
