"""Shuffling BN (MoCo, He et al. 2020, section 3.3).

With per-group BatchNorm, a query and its positive key computed in the same
group would share batch statistics, and the model can "cheat" the pretext
task through them. So the key encoder sees the batch permuted across the BN
groups (devices, or groups within a device; models/norm.py), and its outputs
are put back in the original order afterwards.

Two permutations (`PERMUTATIONS`, chosen by MoCo's `key_bn`):
- 'shuffle' (MoCo's recipes): a uniform random permutation of the global
  batch, as the reference's `_batch_shuffle_ddp` (`torch.randperm` of the
  gathered batch, moco builder.py:81-82 @90e244a) and the CIFAR-10 demo's
  `_batch_shuffle_single_gpu`. A key then stays in its query's BN group with
  probability 1/G for G groups.
- 'shuffle_derange': a permutation that moves every key out of its query's
  group (`group_derangement`); ours, not the reference's.

The permutation is drawn from a key that is the same on every device, so all
devices agree on it without communicating; MoCo derives that key from the
state's rng and the step (moco.train_step), so a resumed run draws the same
permutations.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp


def _check_groups(num_groups: int):
  if num_groups < 2:
    raise ValueError(f"shuffling BN needs at least 2 BN groups in all; got "
                     f"{num_groups}")


def uniform_permutation(rng: jax.Array, num_groups: int,
                        group_size: int) -> jax.Array:
  """MoCo's shuffle: a uniform random permutation of the num_groups *
  group_size samples (moco builder.py:81-82 @90e244a).

  Returns `perm` [N] as `group_derangement`: key slot j (BN group
  j // group_size) takes sample perm[j]. The permutation depends only on
  `rng` and N, not on how N splits into groups, so 8 devices with one group
  each draw the same one as one device with 8 groups.
  """
  _check_groups(num_groups)
  return jax.random.permutation(rng, num_groups * group_size).astype(
      jnp.int32)


def group_derangement(rng: jax.Array, num_groups: int,
                      group_size: int) -> jax.Array:
  """A random permutation of num_groups * group_size samples that moves every
  sample out of its BN group.

  Returns `perm` [N]: key slot j (BN group j // group_size) takes sample
  perm[j], whose query BN group is perm[j] // group_size.

  The reference draws a uniform permutation (`uniform_permutation`), which
  leaves each key in its own
  query's group with probability 1 / num_groups. Here each query group's
  samples are put in random order, and the i-th sample of every group moves
  `shift[i]` groups on, with shift[i] uniform in 1..num_groups-1: never 0, so
  no sample stays, and every key group still gets exactly group_size samples,
  from a random mix of query groups.
  """
  _check_groups(num_groups)
  order_rng, shift_rng = jax.random.split(rng)
  # order[g, i]: the i-th sample of query group g after shuffling the group.
  order = jax.vmap(lambda r: jax.random.permutation(r, group_size))(
      jax.random.split(order_rng, num_groups))
  order = order + (jnp.arange(num_groups) * group_size)[:, None]
  shift = jax.random.randint(shift_rng, (group_size,), 1, num_groups)
  source_group = (jnp.arange(num_groups)[:, None] - shift[None, :]) % num_groups
  perm = order[source_group, jnp.arange(group_size)[None, :]]
  return perm.reshape(-1).astype(jnp.int32)


# key_bn -> the permutation it draws (moco.KEY_BN_MODES adds 'sync').
PERMUTATIONS = {"shuffle": uniform_permutation,
                "shuffle_derange": group_derangement}


def gather(x: jax.Array, axis_name: str | None) -> jax.Array:
  """The whole global batch, in global order, identical on every device."""
  if axis_name is None:
    return x
  # 'invarying': the result is typed as replicated, so it can feed state that
  # leaves shard_map replicated (MoCo's queue).
  return jax.lax.all_gather(x, axis_name, tiled=True, to="invarying")


def device_offset(n: int, axis_name: str | None) -> jax.Array:
  """Global index of this device's first row, for a local batch of n."""
  if axis_name is None:
    return jnp.zeros((), jnp.int32)
  return jax.lax.axis_index(axis_name) * n


def shuffled_apply(fn: Callable[[jax.Array], tuple[jax.Array, Any]],
                   x: jax.Array, perm: jax.Array, *,
                   axis_name: str | None):
  """Runs `fn` on this device's share of the permuted global batch.

  Args:
    fn: local batch [n, ...] -> (out [n, ...], aux); the key encoder.
    x: [n, ...] this device's examples.
    perm: [N] the permutation (`PERMUTATIONS`), same on every device.
    axis_name: mesh axis of the batch, or None (one device).

  Returns (out for this device's own examples [n, ...], out for the whole
  global batch in global order [N, ...] (replicated), aux).

  Communication per step and device: the all_gather of the inputs moves the
  whole global batch (N images; 154 MB at N=256, 224 px, float32), the
  second one N outputs (N x 128 floats). The reference MoCo does the same
  (gather, then index); an all_to_all would move only n images but needs
  equal-sized, fixed blocks per device pair, which a random permutation is
  not.
  """
  n = x.shape[0]
  offset = device_offset(n, axis_name)
  mine = jax.lax.dynamic_slice_in_dim(perm, offset, n)
  out, aux = fn(jnp.take(gather(x, axis_name), mine, axis=0))
  shuffled_out = gather(out, axis_name)        # row j: sample perm[j]
  all_out = jnp.take(shuffled_out, jnp.argsort(perm), axis=0)
  return jax.lax.dynamic_slice_in_dim(all_out, offset, n), all_out, aux
