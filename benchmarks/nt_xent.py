"""NT-Xent forward + backward on CPU: `losses.nt_xent_with_accuracy` against
the straightforward jitted formula, one table measured in one run.

  python benchmarks/nt_xent.py                      # N = 1024 ... 16384
  python benchmarks/nt_xent.py --sizes 4096 --reps 9

For each N (pairs; 2N anchors, d = 128) it times the jitted value_and_grad
w.r.t. both views (median of --reps runs after a warm-up, block_until_ready),
reports the GFLOP/s of the three 2N x 2N x d matmuls (logits, and the two
gradient products) and the temp memory XLA reserves (`memory_analysis`).
Then a subprocess of this script reruns N = --sharded-n under `shard_map`
over 8 fake CPU devices (they share the same cores) and reports the
per-device temp memory next to the 1-device figure.

The machine may be shared: compare the two columns of one run, not numbers
from different runs.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

if __name__ == "__main__" and "--sharded-child" in sys.argv:
  # Must precede the first jax import.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from contrastive_jax import losses  # noqa: E402

DIM = 128
TEMPERATURE = 0.1
TARGET_N = 4096
TARGET_S = 0.7


def reference_nt_xent(z_a, z_b, *, temperature, axis_name=None):
  """The plain formula: the whole [2n, 2N] logits matrix, jax.nn.logsumexp,
  a gather for the positives, argmax for the accuracy, autodiff backward."""
  n = z_a.shape[0]
  a = losses.l2_normalize(z_a.astype(jnp.float32))
  b = losses.l2_normalize(z_b.astype(jnp.float32))
  all_a, all_b = a, b
  offset = 0
  if axis_name is not None:
    all_a = jax.lax.all_gather(a, axis_name, tiled=True)
    all_b = jax.lax.all_gather(b, axis_name, tiled=True)
    offset = jax.lax.axis_index(axis_name) * n
  big_n = all_a.shape[0]
  logits = (jnp.concatenate([a, b]) @ jnp.concatenate([all_a, all_b]).T
            / temperature)
  rows = jnp.arange(n) + offset
  self_col = jnp.concatenate([rows, rows + big_n])
  pos_col = jnp.concatenate([rows + big_n, rows])
  cols = jnp.arange(2 * big_n)
  logits = jnp.where(cols[None, :] == self_col[:, None],
                     jnp.finfo(logits.dtype).min, logits)
  pos = jnp.take_along_axis(logits, pos_col[:, None], axis=-1)[:, 0]
  local = jnp.sum(jax.nn.logsumexp(logits, axis=-1) - pos)
  hits = jnp.sum(jnp.argmax(logits, axis=-1) == pos_col).astype(jnp.float32)
  if axis_name is not None:
    local, hits = jax.lax.psum((local, hits), axis_name)
  return local / (2 * big_n), hits / (2 * big_n)


def optimized_nt_xent(z_a, z_b, *, temperature, axis_name=None):
  out = losses.nt_xent_with_accuracy(z_a, z_b, temperature=temperature,
                                     axis_name=axis_name)
  return out.loss, out.accuracy


IMPLEMENTATIONS = {"blocked": optimized_nt_xent, "plain": reference_nt_xent}


def _value_and_grad(loss_fn):
  # Accuracy rides along as aux, as in the SimCLR step.
  return jax.value_and_grad(
      functools.partial(loss_fn, temperature=TEMPERATURE), argnums=(0, 1),
      has_aux=True)


def _inputs(n, sharding=None):
  rng = np.random.default_rng(0)
  z = [rng.normal(size=(n, DIM)).astype(np.float32) for _ in range(2)]
  if sharding is None:
    return [jnp.asarray(x) for x in z]
  return [jax.device_put(x, sharding) for x in z]


def _compile(loss_fn, n, mesh=None):
  """(compiled fwd+bwd, its inputs) on one device or shard_map over mesh."""
  if mesh is None:
    fn = jax.jit(_value_and_grad(loss_fn))
    args = _inputs(n)
  else:
    per_device = _value_and_grad(functools.partial(loss_fn,
                                                   axis_name="data"))
    fn = jax.jit(jax.shard_map(
        per_device, mesh=mesh, in_specs=(P("data"), P("data")),
        out_specs=((P(), P()), (P("data"), P("data")))))
    args = _inputs(n, NamedSharding(mesh, P("data")))
  return fn.lower(*args).compile(), args


def _time(compiled_by_name, args_by_name, reps):
  """(median, best) seconds per call of each compiled fn, interleaved."""
  for name, c in compiled_by_name.items():
    jax.block_until_ready(c(*args_by_name[name]))   # warm-up
  times = {name: [] for name in compiled_by_name}
  for _ in range(reps):
    for name, c in compiled_by_name.items():
      start = time.perf_counter()
      jax.block_until_ready(c(*args_by_name[name]))
      times[name].append(time.perf_counter() - start)
  return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def _matmul_gflop(n):
  # Logits, then softmax-grad @ candidates and its transpose @ anchors.
  return 3 * 2 * (2 * n) ** 2 * DIM / 1e9


def _measure(n, reps, mesh=None):
  compiled, args = {}, {}
  for name, fn in IMPLEMENTATIONS.items():
    compiled[name], args[name] = _compile(fn, n, mesh)
  timed = _time(compiled, args, reps)
  seconds = {name: t[0] for name, t in timed.items()}
  best = {name: t[1] for name, t in timed.items()}
  temp = {name: c.memory_analysis().temp_size_in_bytes
          for name, c in compiled.items()}
  return seconds, best, temp


def _mib(b):
  return f"{b / 2**20:8.1f}"


def run_single(sizes, reps):
  print(f"NT-Xent fwd+bwd, d={DIM}, tau={TEMPERATURE}, 1 CPU device "
        f"({os.cpu_count()} cores), median of {reps} after warm-up")
  print(f"{'N':>6} {'2N':>6} | {'blocked s':>9} {'GFLOP/s':>7} "
        f"{'temp MiB':>8} | {'plain s':>8} {'GFLOP/s':>7} {'temp MiB':>8} "
        f"| speedup")
  results = {}
  for n in sizes:
    seconds, best, temp = _measure(n, reps)
    results[n] = (seconds, temp, best)
    flop = _matmul_gflop(n)
    print(f"{n:>6} {2 * n:>6} | {seconds['blocked']:9.3f} "
          f"{flop / seconds['blocked']:7.0f} {_mib(temp['blocked'])} | "
          f"{seconds['plain']:8.3f} {flop / seconds['plain']:7.0f} "
          f"{_mib(temp['plain'])} | "
          f"{seconds['plain'] / seconds['blocked']:5.2f}x", flush=True)
  if TARGET_N in results:
    t = results[TARGET_N][0]["blocked"]
    verdict = "PASS" if t <= TARGET_S else "FAIL"
    print(f"target: N={TARGET_N} fwd+bwd <= {TARGET_S} s: median {t:.3f} s "
          f"(best {results[TARGET_N][2]['blocked']:.3f} s) {verdict}")
  return results


def run_sharded_child(n, reps):
  """Prints one JSON line: times and per-device temp bytes on 8 devices."""
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",), devices=devices)
  with jax.set_mesh(mesh):
    seconds, _, temp = _measure(n, reps, mesh)
  print(json.dumps({"devices": len(devices), "seconds": seconds,
                    "temp": temp}))


def run_sharded(n, reps, single):
  out = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--sharded-child",
       "--sharded-n", str(n), "--reps", str(reps)],
      check=True, capture_output=True, text=True)
  res = json.loads(out.stdout.strip().splitlines()[-1])
  k = res["devices"]
  print(f"\nN={n} over {k} fake CPU devices (shard_map; all share the same "
        f"cores), per-device temp memory vs 1 device:")
  local_global = 4 * (2 * n // k) * (2 * n)
  block = min(2 * n // k, losses.default_block_rows(2 * n))
  print(f"  local x global logits (2n x 2N float32) = {_mib(local_global)} "
        f"MiB per device; blocked holds {block} x 2N at a time "
        f"({_mib(4 * block * 2 * n).strip()} MiB per buffer)")
  for name in IMPLEMENTATIONS:
    line = (f"  {name:>7}: {res['seconds'][name]:.3f} s, temp "
            f"{_mib(res['temp'][name])} MiB per device")
    if single is not None:
      one = single[1][name]
      line += (f" (1 device: {_mib(one)} MiB, ratio "
               f"{res['temp'][name] / one:.3f})")
    print(line)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="1024,2048,4096,8192,16384",
                      help="comma-separated N (pairs)")
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--sharded-n", type=int, default=TARGET_N,
                      help="N of the 8-device run (0: skip it)")
  parser.add_argument("--sharded-child", action="store_true",
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.sharded_child:
    run_sharded_child(args.sharded_n, args.reps)
    return
  sizes = [int(s) for s in args.sizes.split(",") if s]
  results = run_single(sizes, args.reps)
  if args.sharded_n:
    run_sharded(args.sharded_n, args.reps, results.get(args.sharded_n))


if __name__ == "__main__":
  main()
