"""Which example sits at each position of the pretraining stream.

The stream is a pure function of (seed, step, process): position p of the
global stream (example j of global batch k is position k * B + j) belongs to
epoch e = p // L, with L = steps_per_epoch * B, and names example
perm_e[p % L], where perm_e is a stateless permutation of the split seeded by
(seed, e). Each epoch drops the N - L examples its permutation puts last, so
every batch is full and every epoch has the same number of steps.

In a run of P processes, process i holds columns [i * B / P, (i + 1) * B / P)
of every global batch: concatenating the processes' local batches in process
order gives exactly the global batch of a one-process run.
"""

import tensorflow as tf


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  return max(1, num_examples // global_batch)


def epoch_permutation(seed, epoch, num_examples):
  """int64 [N]: the order of the split in `epoch`, a pure function of
  (seed, epoch)."""
  key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, 1], tf.int64), tf.cast(epoch, tf.int64))
  return tf.random.experimental.stateless_shuffle(
      tf.range(num_examples, dtype=tf.int64), key)


def local_positions(*, seed, num_examples, global_batch, process_index,
                    process_count, start_step=0):
  """An endless tf.data stream of (global position, example index) pairs
  for this process, from global batch `start_step` on.

  Nothing before `start_step` is read or augmented: the first epoch is
  computed directly and sliced.
  """
  local_batch = global_batch // process_count
  spe = steps_per_epoch(num_examples, global_batch)
  epoch_len = spe * global_batch
  start_epoch, start_row = divmod(start_step, spe)
  columns = slice(process_index * local_batch,
                  (process_index + 1) * local_batch)

  def epoch_pairs(epoch):
    perm = epoch_permutation(seed, epoch, num_examples)
    within = tf.range(epoch_len, dtype=tf.int64)
    # An epoch longer than the split (N < B) wraps around the permutation.
    indices = tf.gather(perm, within % num_examples)
    positions = epoch * epoch_len + within
    first = tf.where(epoch == start_epoch, tf.constant(start_row, tf.int64),
                     tf.constant(0, tf.int64))
    rows = lambda x: tf.reshape(x, [spe, global_batch])[first:, columns]
    return tf.data.Dataset.from_tensor_slices(
        (tf.reshape(rows(positions), [-1]), tf.reshape(rows(indices), [-1])))

  return tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_pairs)
