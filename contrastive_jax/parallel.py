"""Data parallelism over one 'data' mesh axis.

The state is replicated; every batch is split along its leading axis across
all devices of all processes. Per-device step functions run under
`jax.shard_map`, so collectives (`all_gather`, `pmean`, `axis_index`) appear
only where the math needs them, named by `DATA_AXIS`.
"""

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over every device of every process (or the given ones)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> Any:
  """Assembles every process's host batch into global arrays split on 'data'.

  Each process passes only the examples its own devices will hold; the
  global batch is their concatenation in process order.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)


def shard_train_step(per_device_step: Callable, mesh: Mesh) -> Callable:
  """jit(shard_map(step)) with the state replicated, the batch split, and the
  input state donated (its buffers are reused for the new state)."""
  step = jax.shard_map(
      per_device_step, mesh=mesh,
      in_specs=(P(), P(DATA_AXIS)),
      out_specs=(P(), P()))
  return jax.jit(step, donate_argnums=0)
