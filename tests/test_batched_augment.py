"""Batched size-keeping ops: the same bits as one image at a time, whatever
the batch, and the per-example randomness they promise."""

import numpy as np
import pytest
import tensorflow as tf

from contrastive_jax.data import (augment, batched_ops, color_jitter, pipeline,
                                  sources)

# Every batched op, with a blur that acts at 48 px (radius 2).
SPEC = ('random_resized_crop(48, area=(0.2, 1.0))|flip_lr(p=0.5)|'
        'color_jitter(1.0, p=0.8)|grayscale(p=0.2)|'
        'gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1)|'
        'solarize(p=0.2)')


def _images(count, height=60, width=80, seed=0):
  return np.random.default_rng(seed).uniform(
      size=(count, height, width, 3)).astype(np.float32)


def _prepared(view, images):
  """Per-example stage of `view` for images i with seeds (i, 5)."""
  pairs = [view.prepare(tf.constant(image), tf.constant([i, 5], tf.int64))
           for i, image in enumerate(images)]
  return (tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs]))


def test_batched_view_equals_the_single_image_view_bit_for_bit():
  view = augment.build_view(SPEC)
  images = _images(12)
  prepared, uniforms = _prepared(view, images)
  batched = tf.function(view.finish)(prepared, uniforms).numpy()
  for i, image in enumerate(images):
    single = view(tf.constant(image), tf.constant([i, 5], tf.int64)).numpy()
    np.testing.assert_array_equal(batched[i], single)


def test_an_example_does_not_depend_on_its_batch():
  view = augment.build_view(SPEC)
  prepared, uniforms = _prepared(view, _images(16))
  finish = tf.function(view.finish)
  whole = finish(prepared, uniforms).numpy()
  perm = np.random.default_rng(1).permutation(16)
  permuted = finish(tf.gather(prepared, perm), tf.gather(uniforms, perm))
  np.testing.assert_array_equal(permuted.numpy(), whole[perm])
  for part in (slice(0, 3), slice(3, 16), slice(7, 8)):
    np.testing.assert_array_equal(
        finish(prepared[part], uniforms[part]).numpy(), whole[part])


def test_every_batched_op_is_used_in_the_test_batch():
  # Guards the tests above: each coin falls both ways somewhere in 16.
  view = augment.build_view(SPEC)
  _, uniforms = _prepared(view, _images(16, 8, 8))
  assert view.num_uniforms == 1 + (1 + 4 + 4) + 1 + 2 + 1
  coins = {'flip': (0, 0.5), 'jitter': (1, 0.8), 'gray': (10, 0.2),
           'blur': (11, 0.5), 'solarize': (13, 0.2)}
  for name, (column, p) in coins.items():
    chosen = uniforms.numpy()[:, column] < p
    assert chosen.any() and not chosen.all(), name


@pytest.mark.parametrize('delta', [-0.5, -0.37, -0.1, 0.0, 0.05, 0.25, 0.5])
def test_adjust_hue_matches_tf_image_adjust_hue(delta):
  images = _images(2, 16, 16, seed=3)
  # Grey, saturated, black, white and tied-channel pixels.
  images[0, 0, :4] = [[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                      [1.0, 1.0, 1.0]]
  images[0, 1, :3] = [[0.2, 0.7, 0.7], [0.9, 0.9, 0.1], [0.3, 0.1, 0.3]]
  deltas = tf.constant([delta, -delta / 2], tf.float32)
  out = color_jitter.adjust_hue(tf.constant(images), deltas).numpy()
  for i in range(2):
    np.testing.assert_allclose(
        out[i], tf.image.adjust_hue(images[i], deltas[i]).numpy(), atol=1e-5)


def test_jitter_order_is_drawn_per_example():
  op = color_jitter.color_jitter(1.0, p=1.0)
  count = 32
  images = np.repeat(_images(1, 8, 8, seed=4), count, axis=0)
  uniforms = np.random.default_rng(5).uniform(
      size=(count, op.num_uniforms)).astype(np.float32)
  # The same factors for all; only the order keys differ.
  uniforms[:, 5:] = uniforms[0, 5:]
  out = op.apply(tf.constant(images), tf.constant(uniforms)).numpy()
  adjusts = list(color_jitter.IMPLS['torchvision'])
  lows = np.array([0.2, 0.2, 0.2, -0.2], np.float32)
  highs = np.array([1.8, 1.8, 1.8, 0.2], np.float32)
  factors = lows + uniforms[0, 5:] * (highs - lows)
  orders = np.argsort(uniforms[:, 1:5], axis=1)
  for i in range(count):
    expected = tf.constant(images[i:i + 1])
    for j in orders[i]:
      expected = tf.clip_by_value(
          adjusts[j](expected, tf.constant(factors[j:j + 1])), 0.0, 1.0)
    np.testing.assert_allclose(out[i], expected[0].numpy(), atol=1e-6)
  assert len({tuple(order) for order in orders}) > 4
  assert len({out[i].tobytes() for i in range(count)}) > 4


def test_jitter_skips_exactly_the_examples_whose_coin_says_so():
  op = color_jitter.color_jitter(0.5, p=0.8)
  images = _images(6, 8, 8, seed=6)
  uniforms = np.full((6, op.num_uniforms), 0.3, np.float32)
  uniforms[:, 0] = [0.1, 0.9, 0.5, 0.85, 0.79, 0.81]
  out = op.apply(tf.constant(images), tf.constant(uniforms)).numpy()
  for i, skipped in enumerate(uniforms[:, 0] >= 0.8):
    assert np.array_equal(out[i], images[i]) == skipped


def test_blur_only_where_the_coin_says():
  op = batched_ops.gaussian_blur(p=0.5, sigma=(1.0, 2.0))
  board = (np.indices((40, 40)).sum(0) % 2).astype(np.float32)
  images = np.repeat(board[None, ..., None], 3, axis=-1).repeat(5, axis=0)
  images *= np.linspace(0.5, 1.0, 5, dtype=np.float32)[:, None, None, None]
  uniforms = np.array([[0.1, 0.0], [0.7, 0.5], [0.2, 1.0], [0.5, 0.2],
                       [0.49, 0.9]], np.float32)
  out = op.apply(tf.constant(images), tf.constant(uniforms)).numpy()
  always = batched_ops.gaussian_blur(p=1.0, sigma=(1.0, 2.0))
  for i, blurred in enumerate(uniforms[:, 0] < 0.5):
    if not blurred:
      np.testing.assert_array_equal(out[i], images[i])
      continue
    assert out[i].var() < 0.2 * images[i].var()
    # The same sigma alone: p=1 reads the sigma from the same uniform.
    single = always.apply(tf.constant(images[i:i + 1]),
                          tf.constant(uniforms[i:i + 1])).numpy()[0]
    np.testing.assert_array_equal(out[i], single)


def test_pipeline_batched_and_per_example_views_are_the_same_bits():
  spec = SPEC.replace('48', '24')  # digits; blur radius 1 at 24 px
  args = dict(source=sources.open_source('digits', 'train[:64]'),
              local_batch_size=16, view_specs=(spec, spec), seed=3,
              process_index=0, process_count=1)
  runs = [list(pipeline.as_numpy_iterator(
      pipeline.make_pretrain_dataset(batch_augment=batched, **args).take(2)))
          for batched in (True, False)]
  for batched, per_example in zip(*runs):
    for key in ('view1', 'view2', 'label'):
      np.testing.assert_array_equal(batched[key], per_example[key])


def _unknown_size(op):
  """`op.apply` traced with the image height and width unknown, as where
  an op sits before the crop: the partitioned (uncompiled) path."""
  return tf.function(op.apply, input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32),
      tf.TensorSpec([None, op.num_uniforms], tf.float32)])


@pytest.mark.parametrize('make_op', [
    lambda: color_jitter.color_jitter(1.0, p=0.8),
    lambda: color_jitter.color_jitter(0.5, p=1.0, random_order=False),
    lambda: color_jitter.color_jitter(brightness=0.4, contrast=0, saturation=0,
                                     hue=0.1, p=0.8),
    lambda: color_jitter.color_jitter(1.0, p=0.8, impl='simclr_v1'),
    lambda: color_jitter.color_jitter(1.0, p=0.8, impl='simclr_v2'),
    lambda: batched_ops.flip_lr(),
    lambda: batched_ops.grayscale(p=0.5),
    lambda: batched_ops.solarize(p=0.5),
])
def test_compiled_and_partitioned_paths_agree(make_op):
  # Known sizes run one XLA-compiled loop over the examples; unknown sizes
  # the partitioned TF ops. The same ops on the same examples: equal up to
  # float rounding, and the examples an op skips are untouched in both.
  op = make_op()
  images = _images(16, 12, 10, seed=7)
  uniforms = np.random.default_rng(8).uniform(
      size=(16, op.num_uniforms)).astype(np.float32)
  compiled = op.apply(tf.constant(images), tf.constant(uniforms)).numpy()
  partitioned = _unknown_size(op)(images, uniforms).numpy()
  np.testing.assert_allclose(compiled, partitioned, atol=1e-5)
  changed = [not np.array_equal(compiled[i], images[i]) for i in range(16)]
  assert any(changed)
  for i in range(16):
    if np.array_equal(partitioned[i], images[i]):
      np.testing.assert_array_equal(compiled[i], images[i])


def test_an_op_before_the_crop_runs_on_images_of_any_size():
  # An op before the size-setting one sees each image's own size: it must
  # not be compiled for each size (nor fail for lack of one).
  view = augment.build_view('color_jitter(0.5, p=1.0)|flip_lr|'
                            'random_resized_crop(8)')
  run = tf.function(view, input_signature=[
      tf.TensorSpec([None, None, 3], tf.float32),
      tf.TensorSpec([2], tf.int64)])
  for i, (height, width) in enumerate([(9, 13), (20, 11), (16, 16)]):
    out = run(_images(1, height, width, seed=i)[0],
              tf.constant([i, 0], tf.int64)).numpy()
    assert out.shape == (8, 8, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_a_sequence_is_its_ops_one_after_another():
  # flip, jitter and grayscale run as one compiled loop, the blur between
  # runs on its own, solarize starts a new loop; uniforms side by side.
  ops = [batched_ops.flip_lr(), color_jitter.color_jitter(1.0, p=0.8),
         batched_ops.grayscale(p=0.5),
         batched_ops.gaussian_blur(p=0.5, kernel_fraction=0.2),
         batched_ops.solarize(p=0.5)]
  sequence = batched_ops.sequence(ops)
  assert sequence.num_uniforms == sum(op.num_uniforms for op in ops)
  images = _images(12, 20, 20, seed=9)
  uniforms = np.random.default_rng(10).uniform(
      size=(12, sequence.num_uniforms)).astype(np.float32)
  expected, start = tf.constant(images), 0
  for op in ops:
    expected = op.apply(expected,
                        uniforms[:, start:start + op.num_uniforms])
    start += op.num_uniforms
  got = sequence.apply(tf.constant(images), tf.constant(uniforms)).numpy()
  np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
  # Unknown sizes: each op's partitioned path, the same values.
  np.testing.assert_allclose(_unknown_size(sequence)(images, uniforms).numpy(),
                             got, atol=1e-5)
