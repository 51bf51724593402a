"""Reading a split by index in groups: a real ArrayRecord dataset and digits."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from contrastive_jax.data import pipeline, sources

NUM_EXAMPLES = 12


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A TFDS dataset 'tiny_pngs' stored as ArrayRecord: 12 PNGs, 10x14."""
  root = tmp_path_factory.mktemp('tfds')
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(NUM_EXAMPLES, 10, 14, 3),
                        dtype=np.uint8)
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3)),
      'label': tfds.features.ClassLabel(num_classes=5),
  })
  tfds.dataset_builders.store_as_tfds_dataset(
      name='tiny_pngs', version='1.0.0', features=features,
      split_datasets={'train': [(i, {'image': image, 'label': i % 5})
                                for i, image in enumerate(images)]},
      data_dir=root, file_format='array_record', disable_shuffling=True)
  return str(root), images


def _decoded(source, indices):
  group = source.read(tf.constant(indices, tf.int64))
  return [source.decode({k: v[i] for k, v in group.items()})
          for i in range(len(indices))]


@pytest.mark.parametrize('name', ['tiny_pngs', 'digits'])
def test_a_group_read_equals_single_reads(name, data_dir):
  root, _ = data_dir
  source = sources.open_source(name, 'train', data_dir=root)
  indices = [5, 0, 11, 5, 3]
  group = _decoded(source, indices)
  for index, example in zip(indices, group):
    alone = _decoded(source, [index])[0]
    np.testing.assert_array_equal(example['image'], alone['image'])
    assert int(example['label']) == int(alone['label'])


def test_records_decode_to_the_stored_images_and_labels(data_dir):
  root, images = data_dir
  source = sources.open_source('tiny_pngs', 'train', data_dir=root)
  assert source.num_examples == NUM_EXAMPLES
  for index, example in zip([7, 2], _decoded(source, [7, 2])):
    np.testing.assert_array_equal(example['image'], images[index])
    assert example['image'].dtype == tf.uint8
    assert int(example['label']) == index % 5


def test_stream_on_a_real_array_record_dataset(data_dir):
  root, _ = data_dir
  spec = 'random_resized_crop(8)|flip_lr|color_jitter(0.5, p=0.8)'
  args = dict(source=sources.open_source('tiny_pngs', 'train', data_dir=root),
              view_specs=(spec, spec), seed=0)
  whole = list(pipeline.as_numpy_iterator(pipeline.make_pretrain_dataset(
      local_batch_size=4, process_index=0, process_count=1, **args).take(4)))
  parts = [list(pipeline.as_numpy_iterator(pipeline.make_pretrain_dataset(
      local_batch_size=2, process_index=i, process_count=2, **args).take(4)))
           for i in range(2)]
  assert whole[0]['view1'].shape == (4, 8, 8, 3)
  for k, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[0][k][key], parts[1][k][key]]), batch[key])
