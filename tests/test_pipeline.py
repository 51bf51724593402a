"""Training and eval streams on offline digits and on a real prepared TFDS
dataset."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from contrastive_jax.data import order, pipeline, sources
from contrastive_jax.data.digits import load_digits_split
from contrastive_jax.errors import ConfigError

SPEC = ('random_resized_crop(16, area=(0.25, 1.0))|flip_lr|'
        'color_jitter(0.5, p=0.8)|grayscale(p=0.2)')


def _pretrain(seed=0, process_index=0, process_count=1, batch=8,
              dataset='digits', split='train', data_dir=None, **kwargs):
  args = dict(source=sources.open_source(dataset, split, data_dir=data_dir),
              local_batch_size=batch, view_specs=(SPEC, SPEC), seed=seed,
              process_index=process_index, process_count=process_count,
              )
  args.update(kwargs)
  return pipeline.make_pretrain_dataset(**args)


def _take(ds, n=3):
  return list(itertools.islice(pipeline.as_numpy_iterator(ds), n))


def _same(batches_a, batches_b):
  return all(np.array_equal(a[k], b[k])
             for a, b in zip(batches_a, batches_b) for k in a)


@pytest.fixture(scope='module')
def seed0_batches():
  return _take(_pretrain(seed=0))


def test_pretrain_batch_shapes_dtypes_and_range(seed0_batches):
  batch = seed0_batches[0]
  assert set(batch) == {'view1', 'view2', 'label'}
  for view in ('view1', 'view2'):
    assert batch[view].shape == (8, 16, 16, 3)
    assert batch[view].dtype == np.float32
    assert batch[view].min() >= 0.0 and batch[view].max() <= 1.0
  assert batch['label'].shape == (8,) and batch['label'].dtype == np.int32
  assert np.all((batch['label'] >= 0) & (batch['label'] < 10))


def test_two_views_of_an_image_differ(seed0_batches):
  batch = seed0_batches[0]
  for i in range(8):
    assert not np.allclose(batch['view1'][i], batch['view2'][i])


def test_same_seed_same_batches_different_seed_different(seed0_batches):
  assert _same(seed0_batches, _take(_pretrain(seed=0)))
  assert not _same(seed0_batches, _take(_pretrain(seed=1)))


def test_processes_batches_concatenate_to_the_one_process_batch():
  # 2 processes x 4 = the global batch of 8 of a 1-process run, bit for bit.
  whole = _take(_pretrain(batch=8), 2)
  parts = [_take(_pretrain(process_index=i, process_count=2, batch=4), 2)
           for i in range(2)]
  for k in range(2):
    for key in whole[k]:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][k][key], parts[1][k][key]]),
          whole[k][key])
  assert not _same(parts[0], parts[1])


def test_starting_at_step_k_gives_the_batches_of_a_run_from_0():
  # 40 examples, batch 8: 5 steps per epoch; 12 steps cross two epochs.
  from_0 = _take(_pretrain(split='train[:40]'), 12)
  for k in (3, 5, 9):
    assert _same(from_0[k:], _take(_pretrain(split='train[:40]',
                                             start_step=k), 12 - k))


def test_each_epoch_is_a_fresh_permutation_of_the_split():
  pairs = list(order.local_positions(
      seed=0, num_examples=43, global_batch=8, process_index=0,
      process_count=1).take(3 * 40).as_numpy_iterator())
  positions, indices = map(np.asarray, zip(*pairs))
  np.testing.assert_array_equal(positions, np.arange(3 * 40))
  epochs = indices.reshape(3, 40)  # 5 steps of 8; 3 examples left out
  for epoch in epochs:
    assert len(set(epoch)) == 40 and set(epoch) <= set(range(43))
  assert not np.array_equal(epochs[0], epochs[1])


def test_distinct_view_specs_are_used_per_view():
  ds = _pretrain(view_specs=('resize(16)', 'resize(16)|solarize(p=1.0)'))
  batch = _take(ds, 1)[0]
  plain = batch['view1']
  np.testing.assert_allclose(
      batch['view2'], np.where(plain >= 0.5, 1 - plain, plain), atol=1e-6)


@pytest.mark.parametrize('batch', [0, -4, 2.0, True])
def test_bad_batch_size_names_the_field(batch):
  with pytest.raises(ConfigError, match='batch_size'):
    _pretrain(batch=batch)


def test_bad_view_spec_names_the_field():
  with pytest.raises(ConfigError, match='view_augment_2'):
    _pretrain(view_specs=(SPEC, 'flip_lr|nope'))


def _eval(process_index=0, process_count=1, batch=64, view_spec=''):
  return pipeline.make_eval_dataset(
      source=sources.open_source('digits', 'test'), local_batch_size=batch,
      view_spec=view_spec, process_index=process_index,
      process_count=process_count)


def test_eval_covers_every_example_once_with_padding_masked():
  test = load_digits_split('test')
  batches = list(pipeline.as_numpy_iterator(_eval(batch=64)))
  assert len(batches) == -(-len(test['label']) // 64)
  for batch in batches:
    assert batch['image'].shape == (64, 8, 8, 3)
    assert batch['mask'].shape == (64,) and batch['label'].dtype == np.int32
  mask = np.concatenate([b['mask'] for b in batches]).astype(bool)
  assert mask.sum() == len(test['label'])
  images = np.concatenate([b['image'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  # The identity view keeps pixels, so real rows are the split, in order.
  np.testing.assert_allclose(images[mask] * 255, test['image'], atol=1e-3)
  np.testing.assert_array_equal(labels[mask], test['label'])
  assert not images[~mask].any() and not labels[~mask].any()


def test_eval_processes_yield_equal_batch_counts_covering_the_split():
  runs = [list(pipeline.as_numpy_iterator(_eval(i, 2, batch=45)))
          for i in range(2)]
  assert len(runs[0]) == len(runs[1]) == 4  # ceil(180 / 45)
  assert sum(b['mask'].sum() for run in runs for b in run) == 359


def test_eval_view_resizes():
  batch = next(pipeline.as_numpy_iterator(_eval(batch=4,
                                                view_spec='resize(16)')))
  assert batch['image'].shape == (4, 16, 16, 3)


def test_prepared_tfds_batches_have_the_right_shape(prepared_tfds):
  data_dir, splits = prepared_tfds
  spec = 'random_resized_crop(32)|flip_lr|color_jitter(0.5, p=0.8)'
  train = _pretrain(dataset='cj_photos_ar_jpeg', data_dir=data_dir,
                    view_specs=(spec, spec), batch=4)
  batch = _take(train, 1)[0]
  evaluation = pipeline.make_eval_dataset(
      source=sources.open_source('cj_photos_ar_jpeg', 'test',
                                 data_dir=data_dir),
      local_batch_size=8, view_spec='center_crop(16)', process_index=0,
      process_count=1)
  eval_batches = list(pipeline.as_numpy_iterator(evaluation))
  assert batch['view1'].shape == batch['view2'].shape == (4, 32, 32, 3)
  assert batch['label'].shape == (4,)
  assert len(eval_batches) == 3  # ceil(20 / 8)
  assert sum(b['mask'].sum() for b in eval_batches) == len(splits['test'])


def test_one_view_spec_gives_one_view():
  ds = _pretrain(view_specs=('resize(16)|flip_lr',))
  batch = next(iter(tfds.as_numpy(ds)))
  assert sorted(batch) == ['label', 'view1']
  assert batch['view1'].shape[1:] == (16, 16, 3)
