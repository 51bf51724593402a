"""The input streams: endless pretraining batches and one-pass eval.

The pretraining stream is a pure function of (seed, step, process index):
  * which example fills each slot of global batch k is an index function of
    (seed, epoch) (order.py), so a run resumed at step k starts there
    directly (`start_step`), reading and augmenting nothing before it;
  * example j of global batch k is augmented with a key derived by stateless
    fold-ins from (seed, k * B + j), its GLOBAL position, never from the
    process, the global TF random state, parallelism or timing.
Each process reads and augments only its own columns of every global batch,
with its LOCAL batch size (the global batch divided by the number of
processes); the processes' batches concatenated in process order are the
global batch of a one-process run, example for example and bit for bit.

The split comes as a `sources.Source`, resolved once per run: nothing here
knows which kind of dataset it reads.

Throughput: records are read in groups of READ_GROUP per Python call; decoding
and the size-setting ops (crops) run per example in a parallel map; the
size-keeping ops (flip, colour, blur) run in a parallel map over batches of
up to `_micro_batch` examples (augment.View). A view of an example does not
depend on which examples share its group or batch, so none of this changes
a single bit of the stream. With `augment_on_device` the size-keeping ops
run in the train step instead (device_ops.py), on the same uniforms.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data import augment
from contrastive_jax.data import order
from contrastive_jax.data import sources
from contrastive_jax.data import view_spec
from contrastive_jax.data.sources import READ_GROUP
from contrastive_jax.errors import ConfigError

# Floats per view in one batch of the size-keeping ops: large enough to
# spread per-op overhead (and fill the blur's groups of 8), small enough
# not to stream every op through memory (16 MiB; 27 views at 224 px).
_BATCH_FLOATS = 2**22


def pretrain_stream(*, source, local_batch_size, view_specs, seed,
                    process_index, process_count,
                    num_parallel=tf.data.AUTOTUNE, batch_augment=True,
                    view_fields=None, augment_on_device=False):
  """Checks the arguments; returns `make(start_step)`, which builds the
  stream of batches of `source` (a `sources.Source`) from global batch
  `start_step` on.

  Batches are {'view1', ..., 'viewV': float32 [B, H, W, 3], 'label'}: one
  view per spec in `view_specs` (contrastive methods pass two, the same spec
  twice for SimCLR, and multi-crop more, of other sizes; classifiers trained
  on augmented images pass one; `view_fields` names each spec's config field
  in errors). The keys of views 1 and 2 are the two halves of a split of the
  example's key, those of view v > 2 its fold-in with v - 1, so adding views
  changes no bit of the first two. Views
  are independent augmentations of the same images, in [0, 1], and go to the
  encoder as they are (as in SimCLR's reference implementation; its first
  BatchNorm absorbs the scale). Every batch is full. `batch_augment=False`
  runs whole views per example instead (the same values; for benchmarks).

  `augment_on_device=True` stops each view after its per-example stage
  (`augment.View.prepare`: decode, crops): 'view{i}' holds the crops and
  'uniforms{i}' (float32 [B, n]) what the view's size-keeping ops will draw
  on, for `device_ops.batch_augmenter` to apply in the train step. The keys
  are those of the default stream, so the views it makes are the same to
  float rounding, and `make(k)` is still the tail of `make(0)`.
  """
  _check_batch_size(local_batch_size)
  if augment_on_device and not batch_augment:
    raise ValueError('augment_on_device needs batch_augment (the two-stage '
                     'views)')
  if (not isinstance(view_specs, (tuple, list)) or not view_specs
      or not all(isinstance(s, str) for s in view_specs)):
    raise ConfigError(f'view_augment: expected one or more view spec '
                      f'strings, got {view_specs!r}')
  if view_fields is None:
    view_fields = (['view_augment', 'view_augment_2'] +
                   [f'extra_views[{i}]' for i in range(len(view_specs) - 2)])
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ConfigError(f'seed: expected an int, got {seed!r}')
  views = [augment.build_view(spec, field)
           for spec, field in zip(view_specs, view_fields)]
  seed_key = tf.constant([seed, 0], tf.int64)

  def read(positions, indices):
    return positions, source.read(indices)

  def prepare(position, record):
    example = source.decode(record)
    key = tf.random.experimental.stateless_fold_in(seed_key, position)
    view_keys = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    view_keys += [tf.random.experimental.stateless_fold_in(key, v)
                  for v in range(2, len(views))]
    image = tf.image.convert_image_dtype(example['image'], tf.float32)
    out = {'label': tf.cast(example['label'], tf.int32)}
    for i, view in enumerate(views):
      if batch_augment:
        out[view_spec.view_key(i + 1)], out[view_spec.uniforms_key(
            i + 1)] = view.prepare(image, view_keys[i])
      else:
        out[view_spec.view_key(i + 1)] = view(image, view_keys[i])
    return out

  def finish(batch):
    out = {'label': batch['label']}
    for i, view in enumerate(views):
      out[view_spec.view_key(i + 1)] = view.finish(
          batch[view_spec.view_key(i + 1)],
          batch[view_spec.uniforms_key(i + 1)])
    return out

  def make(start_step=0):
    ds = order.local_positions(
        seed=seed, num_examples=source.num_examples,
        global_batch=local_batch_size * process_count,
        process_index=process_index, process_count=process_count,
        start_step=start_step)
    ds = ds.batch(READ_GROUP).map(read, num_parallel_calls=num_parallel,
                                  deterministic=True).unbatch()
    ds = ds.map(prepare, num_parallel_calls=num_parallel, deterministic=True)
    if not batch_augment or augment_on_device:
      ds = ds.batch(local_batch_size, drop_remainder=True)
      return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE)
    micro = min(_micro_batch(ds.element_spec[view_spec.view_key(i + 1)].shape,
                             local_batch_size) for i in range(len(views)))
    ds = ds.batch(micro, drop_remainder=True)
    ds = ds.map(finish, num_parallel_calls=num_parallel, deterministic=True)
    if micro != local_batch_size:
      ds = ds.unbatch().batch(local_batch_size, drop_remainder=True)
    return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE)

  return make


def _micro_batch(view_shape, local_batch_size):
  """Examples per batch of the size-keeping ops (see _BATCH_FLOATS)."""
  if not view_shape.is_fully_defined():
    return local_batch_size
  return max(1, min(local_batch_size,
                    _BATCH_FLOATS // view_shape.num_elements()))


def make_pretrain_dataset(*, start_step=0, **kwargs):
  """`pretrain_stream(**kwargs)(start_step)`."""
  return pretrain_stream(**kwargs)(start_step)


def num_eval_batches(source, local_batch_size, process_count) -> int:
  """Batches of `make_eval_dataset` on every process."""
  largest_shard = -(-source.num_examples // process_count)
  return -(-largest_shard // local_batch_size)


def eval_image(view, image):
  """float32 [0, 1] `view` of a uint8 image, with the fixed key every
  evaluation read uses (random ops in an eval spec give the same output
  every time)."""
  image = tf.image.convert_image_dtype(image, tf.float32)
  return view(image, tf.zeros([2], tf.int64))


def eval_view(spec):
  """The `augment.View` of config.eval_augment (a ConfigError for a bad
  spec): the loop builds it before the workdir is touched, so that a bad
  spec stops the run then and not after training."""
  return augment.build_view(spec, 'eval_augment')


def make_eval_dataset(*, source, local_batch_size, view_spec, process_index,
                      process_count):
  """One pass of batches {'image', 'label', 'mask'} over `source`, all of
  the same shape.

  'image' is float32 [B, H, W, 3] in [0, 1] from one deterministic view
  (random ops in `view_spec` get a fixed seed), 'label' int32 [B], 'mask'
  float32 [B]: 1 for real examples, 0 for padding rows (which are all zeros).
  Every process yields the same number of batches, ceil(ceil(N / P) / B), so
  multi-process eval steps stay in lockstep; its mask sums to its shard size.
  """
  _check_batch_size(local_batch_size)
  view = eval_view(view_spec)
  num_batches = num_eval_batches(source, local_batch_size, process_count)
  ds = source.sequential(process_index=process_index,
                         process_count=process_count)

  def prepare(example):
    return {
        'image': eval_image(view, example['image']),
        'label': tf.cast(example['label'], tf.int32),
        'mask': tf.constant(1.0, tf.float32),
    }

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  image_shape = ds.element_spec['image'].shape
  if not image_shape.is_fully_defined():
    raise ConfigError(f'eval view_spec: {view_spec!r} must give a fixed image '
                      f'size (end it with resize or center_crop), got '
                      f'{image_shape}')
  padding = tf.data.Dataset.from_tensors({
      'image': tf.zeros(image_shape, tf.float32),
      'label': tf.constant(0, tf.int32),
      'mask': tf.constant(0.0, tf.float32),
  }).repeat()
  ds = ds.concatenate(padding).take(num_batches * local_batch_size)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE)


def as_numpy_iterator(ds):
  """Iterates `ds` as nested dicts of NumPy arrays (for feeding JAX).

  A DataError a source raised while reading (a record that cannot be read,
  naming its file and example) comes out as itself, not as the TensorFlow
  error tf.data wraps it in."""
  batches = iter(tfds.as_numpy(ds))
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      return
    except tf.errors.OpError:
      error = sources.pending_error()
      if error is None:
        raise
    else:
      yield batch
      continue
    # The iterator goes first: a traceback keeping it (and its threads)
    # alive until the interpreter exits makes that exit abort.
    del batches
    raise error.with_traceback(None) from None


def _check_batch_size(local_batch_size):
  if (isinstance(local_batch_size, bool) or
      not isinstance(local_batch_size, int) or local_batch_size < 1):
    raise ConfigError(f'batch_size: the per-process batch size must be a '
                      f'positive int, got {local_batch_size!r}')


def _options():
  options = tf.data.Options()
  options.deterministic = True
  # Parallelism comes from tf.data's parallel map across examples; ops
  # inside one example competing for threads only adds contention.
  options.threading.max_intra_op_parallelism = 1
  return options
