"""Real TFDS datasets for benchmarks, built offline from real photos.

scikit-learn ships two photos (china.jpg, flower.jpg, 427x640). From them:
  * `photo_dataset`: ImageNet-like examples, random crops of the photos
    resized to 500x375 (width x height) and JPEG-encoded at quality 90;
  * `tiny_dataset`: CIFAR-like 32x32 examples, PNG-encoded as TFDS cifar10
    stores them.
Both are written with the TFDS writer, as ArrayRecord (the default) or
TFRecord, into `data_dir` under a given name, so `tfds.builder(name,
data_dir=data_dir)` (and so the training input pipeline) reads them exactly
as it reads a prepared cifar10 or imagenet2012. `store` writes any images
this way (the tests' real prepared datasets).
"""

import os

# Before TensorFlow loads: keep its C++ start-up chatter out of the output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

NUM_CLASSES = 10


def sample_photos():
  """The two photos as uint8 [427, 640, 3] arrays."""
  from sklearn.datasets import load_sample_images  # Heavy, only when used.
  return [np.asarray(image, np.uint8) for image in load_sample_images().images]


def random_crops(count, height, width, seed=0, min_fraction=0.5):
  """`count` uint8 [height, width, 3] images: random crops of the photos
  (at least `min_fraction` of each side), resized, so that no two are
  alike."""
  rng = np.random.default_rng(seed)
  photos = sample_photos()
  out = []
  for i in range(count):
    photo = photos[i % len(photos)]
    rows, cols = photo.shape[:2]
    crop_h = int(rows * rng.uniform(min_fraction, 1.0))
    crop_w = int(cols * rng.uniform(min_fraction, 1.0))
    top = rng.integers(0, rows - crop_h + 1)
    left = rng.integers(0, cols - crop_w + 1)
    crop = photo[top:top + crop_h, left:left + crop_w]
    resized = tf.image.resize(crop, (height, width), method='area')
    out.append(tf.cast(tf.round(resized), tf.uint8).numpy())
  return out


def store(name, data_dir, splits, encoding, *, file_format='array_record',
          num_classes=NUM_CLASSES):
  """Writes `splits` ({split: [uint8 [H, W, 3] images]}) as TFDS dataset
  `name` with labels i % num_classes, images encoded as 'jpeg' or 'png'.
  Returns the name."""
  encode = {'jpeg': lambda x: tf.io.encode_jpeg(x, quality=90),
            'png': tf.io.encode_png}[encoding]
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3),
                                   encoding_format=encoding),
      'label': tfds.features.ClassLabel(num_classes=num_classes),
  })
  # (key, example) pairs, as a builder's _generate_examples yields them.
  split_datasets = {
      split: [(i, {'image': encode(image).numpy(), 'label': i % num_classes})
              for i, image in enumerate(images)]
      for split, images in splits.items()}
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version='1.0.0', features=features,
      split_datasets=split_datasets, data_dir=data_dir,
      file_format=file_format, disable_shuffling=True)
  return name


def _store(name, data_dir, images, encoding):
  return store(name, data_dir, {'train': images}, encoding)


def photo_dataset(data_dir, count=512, name='bench_photos'):
  """ImageNet-like: `count` 500x375 JPEGs (quality 90). Returns the name."""
  return _store(name, data_dir, random_crops(count, 375, 500), 'jpeg')


def tiny_dataset(data_dir, count=2048, name='bench_tiny'):
  """CIFAR-like: `count` 32x32 PNGs. Returns the name."""
  return _store(name, data_dir, random_crops(count, 32, 32, seed=1), 'png')
