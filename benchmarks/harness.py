"""Shared pieces of the benchmarks: a method's real jitted train step built
from a config file exactly as `contrastive_jax.train` builds it, synthetic
device-resident batches, abstract inputs for compile-only runs, timing.

Imports neither TensorFlow, TFDS nor clu (the accelerator machines have
none): no data pipeline, no metric writers, and `contrastive_jax.train` is not
imported; the step comes from `method_steps.build`, as in train.py.
"""

import dataclasses
import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from contrastive_jax import method_steps, methods, parallel
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax.data import view_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")
# The data-dependent step counts of a real run (train.steps_for) need the
# dataset's size; the step's cost does not depend on them.
STEPS_PER_EPOCH = 100


def config_files() -> list[str]:
  """Every configs/*.py, by name (no extension)."""
  return config_lib.config_names(CONFIG_DIR)


def load_config(spec: str, **overrides) -> ml_collections.ConfigDict:
  """`spec` as on the command line without the directory: 'simclr:cifar10'
  or 'configs/simclr.py:cifar10'. Dotted overrides: head__output_dim=64."""
  name, _, variant = spec.partition(":")
  name = os.path.splitext(os.path.basename(name))[0]
  config = config_lib.load(
      f"{name}:{variant}" if variant else name,
      {key.replace("__", "."): value for key, value in overrides.items()},
      CONFIG_DIR)
  if "image_size" in overrides:
    # Synthetic batches of that size: views of it keep the config valid
    # (config_checks holds image_size to the views' output size).
    size = config.image_size
    for field in ("view_augment", "eval_augment"):
      if field not in overrides:
        config[field] = f"resize({size})"
    if config.get("view_augment_2") and "view_augment_2" not in overrides:
      config.view_augment_2 = ""
  if "pretrained" in config and not config.pretrained:
    # A classifier (linear_eval, finetune): a random encoder of the
    # config's own architecture, so no checkpoint.
    config.pretrained = "random"
  return config


def fit_to_devices(config: ml_collections.ConfigDict,
                   num_devices: int) -> ml_collections.ConfigDict:
  """What a run on `num_devices` must change: a shuffled key BN (MoCo's
  shuffle-BN) needs two BN groups in all, so on one device a config with
  one group per device gets 8, as the reference's 8 GPUs (the MoCo
  configs' docstrings advise it)."""
  if ("key_bn" in config and config.key_bn != "sync"
      and num_devices * config.bn_groups_per_device < 2):
    config.bn_groups_per_device = 8
  return config


@dataclasses.dataclass
class Bench:
  """A method's model, state initialiser and train step, as train.py has
  them (method_steps.build: jit(shard_map(skip_nonfinite(train_step))))."""
  config: ml_collections.ConfigDict
  built: method_steps.MethodSteps

  def __post_init__(self):
    self.mesh = self.built.mesh
    self.method = self.built.method
    self.model = self.built.model
    self.init = self.built.init          # rng -> replicated state
    self.step = self.built.train_step    # donates the input state
    self.abstract_state = self.built.abstract_state

  def abstract_batch(self):
    sharding = parallel.batch_sharded(self.mesh)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        batch_shapes(self.config))


def build(config: ml_collections.ConfigDict, mesh=None, *,
          guard: bool = True) -> Bench:
  """The real step of `config` on `mesh` (default: all devices), built as
  `train.train_and_evaluate` builds it (config validated first).
  guard=False leaves out `guards.skip_nonfinite` (to measure it)."""
  mesh = parallel.make_data_mesh() if mesh is None else mesh
  config_checks.validate(config, num_devices=mesh.size,
                         num_processes=jax.process_count())
  total_steps = (int(config.num_train_steps) if config.num_train_steps > 0
                 else max(1, int(config.num_epochs * STEPS_PER_EPOCH)))
  return Bench(config=config, built=method_steps.build(
      config, mesh, steps_per_epoch=STEPS_PER_EPOCH, total_steps=total_steps,
      guard=guard))


def batch_shapes(config) -> dict[str, jax.ShapeDtypeStruct]:
  """The pipeline's global batch: 'view1'..'viewV' float32 [B, H, W, 3],
  each of its view's size (multi-crop's small views included), and
  'label' int32 [B]."""
  method = methods.get_method(config.method)
  b, shapes = config.batch_size, {}
  for i, (field, spec) in enumerate(view_spec.training_views(
      config, method.num_views, method.extra_views)):
    h, w = view_spec.output_size(spec, field) or (config.image_size,) * 2
    shapes[view_spec.view_key(i + 1)] = jax.ShapeDtypeStruct((b, h, w, 3),
                                                             jnp.float32)
  shapes["label"] = jax.ShapeDtypeStruct((b,), jnp.int32)
  return shapes


def synthetic_batch(config, mesh, seed: int = 0) -> dict[str, jax.Array]:
  """Random images in [0, 1] and labels, already on the devices."""
  rng = np.random.default_rng(seed)
  batch = {}
  for name, s in batch_shapes(config).items():
    if name == "label":
      batch[name] = rng.integers(0, max(config.num_classes, 1), s.shape,
                                 dtype=np.int32)
    else:
      batch[name] = rng.random(s.shape, dtype=np.float32)
  return jax.device_put(batch, parallel.batch_sharded(mesh))


def cost(lowered_or_compiled) -> dict[str, float]:
  """XLA's cost analysis of one call ('flops', 'bytes accessed', ...; empty
  where the backend gives none).

  Of a `Lowered`: the HLO before the backend's passes, so every convolution
  counts. Of a `Compiled`: the optimised program, whose byte counts reflect
  fusion, but on GPU convolutions and matmuls become library calls (cuDNN,
  cuBLAS) that the analysis counts as nothing.
  """
  try:
    result = lowered_or_compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if isinstance(result, (list, tuple)):  # older JAX: one dict per program
    result = result[0] if result else None
  return {k: float(v) for k, v in (result or {}).items()
          if isinstance(v, (int, float))}


def cost_flops(lowered_or_compiled) -> float | None:
  """FLOPs of one call from XLA's cost analysis (None where the backend
  gives none); see `cost` for which to pass."""
  return cost(lowered_or_compiled).get("flops")


class Timer:
  """Interleaved timing of several candidates: each rep runs every candidate
  once (`calls` back-to-back calls, synchronised at both ends); medians over
  reps, so that load from other processes hits all candidates alike."""

  def __init__(self):
    self.samples: dict[str, list[float]] = {}

  def measure(self, name: str, run: Callable[[], Any], calls: int = 1):
    start = time.perf_counter()
    out = None
    for _ in range(calls):
      out = run()
    jax.block_until_ready(out)
    self.samples.setdefault(name, []).append(
        (time.perf_counter() - start) / calls)

  def median(self, name: str) -> float:
    return statistics.median(self.samples[name])

  def spread(self, name: str) -> tuple[float, float]:
    s = self.samples[name]
    return min(s), max(s)


class StepRunner:
  """Calls a donating train step on its own state, forever."""

  def __init__(self, bench: Bench, batch, seed: int = 0):
    self._bench, self._batch = bench, batch
    with jax.set_mesh(bench.mesh):
      self.state = bench.init(jax.random.PRNGKey(seed))
    self.metrics = None

  def __call__(self):
    with jax.set_mesh(self._bench.mesh):
      self.state, self.metrics = self._bench.step(self.state, self._batch)
    return self.metrics


def table(rows: list[list[Any]], header: list[str]) -> str:
  """A plain fixed-width table."""
  cells = [header] + [[_fmt(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def _fmt(c) -> str:
  if isinstance(c, float):
    return f"{c:.4g}" if abs(c) < 1e4 else f"{c:.3e}"
  return str(c)
