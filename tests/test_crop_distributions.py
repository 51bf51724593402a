"""The crop samplers' laws against their references, written out in NumPy:
torchvision's RandomResizedCrop.get_params (MoCo) and TF's
sample_distorted_bounding_box kernel (SimCLR). Seeded, so deterministic;
tolerances come from the sample size (3 standard errors, or a KS bound)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from contrastive_jax.data import augment
from contrastive_jax.errors import ConfigError

DRAWS = 20_000
ASPECT = (3 / 4, 4 / 3)


def torchvision_get_params(rng, height, width, scale, ratio):
  """torchvision.transforms.RandomResizedCrop.get_params, line by line."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      i = int(rng.integers(0, height - h + 1))
      j = int(rng.integers(0, width - w + 1))
      return i, j, h, w
  in_ratio = float(width) / float(height)
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def tf_sampler(rng, height, width, area_range, aspect_range,
               min_object_covered, max_attempts):
  """TF's sample_distorted_bounding_box kernel (GenerateRandomCrop and the
  overlap check against the whole image), returning (h, w)."""
  rint = lambda x: int(np.rint(np.float32(x)))  # lrintf: half to even.
  min_area = area_range[0] * width * height
  max_area = area_range[1] * width * height
  for _ in range(max_attempts):
    ar = rng.uniform(aspect_range[0], aspect_range[1])
    h = rint(math.sqrt(min_area / ar))
    max_h = rint(math.sqrt(max_area / ar))
    if rint(max_h * ar) > width:
      max_h = int((width + 0.5 - 1e-7) / ar)
      if rint(max_h * ar) > width:
        max_h -= 1
    max_h = min(max_h, height)
    h = min(h, max_h)
    if h < max_h:
      h += int(rng.integers(0, max_h - h + 1))
    w = rint(h * ar)
    crop_area = w * h
    if crop_area < min_area:
      h += 1
      w = rint(h * ar)
      crop_area = w * h
    if crop_area > max_area:
      h -= 1
      w = rint(h * ar)
      crop_area = w * h
    if (crop_area < min_area or crop_area > max_area or w > width or
        h > height or w <= 0 or h <= 0):
      continue
    if crop_area >= min_object_covered * width * height:
      return h, w
  return height, width


def _reference(sampler, count, seed=0):
  rng = np.random.default_rng(seed)
  return np.array([sampler(rng) for _ in range(count)])


def _ours(height, width, count, **box):
  """(top, left, h, w) of `count` crops, seeds (i, 7) like the pipeline's
  per-example keys."""
  shape = tf.constant([height, width, 3], tf.int32)

  def one(i):
    seed = tf.stack([i, tf.constant(7, tf.int64)])
    begin, size = augment.crop_box(shape, seed, **box)
    return tf.concat([begin[:2], size[:2]], 0)
  ds = tf.data.Dataset.range(count).map(one, num_parallel_calls=4)
  return next(iter(ds.batch(count))).numpy()


def _same_mean(a, b):
  """|mean a - mean b| within 3 standard errors of the difference."""
  se = math.sqrt(a.var() / len(a) + b.var() / len(b))
  assert abs(a.mean() - b.mean()) < 3 * se, (a.mean(), b.mean(), se)


def _ks_ok(a, b):
  """Two-sample Kolmogorov-Smirnov at alpha = 0.001 (c = 1.95)."""
  grid = np.sort(np.concatenate([a, b]))
  cdf = lambda x: np.searchsorted(np.sort(x), grid, side='right') / len(x)
  d = np.abs(cdf(a) - cdf(b)).max()
  bound = 1.95 * math.sqrt((len(a) + len(b)) / (len(a) * len(b)))
  assert d < bound, (d, bound)


TORCHVISION = dict(impl='torchvision', area=(0.2, 1.0), aspect=ASPECT,
                   min_object_covered=0.0, max_attempts=10)


@pytest.fixture(scope='module')
def torchvision_draws():
  ours = _ours(256, 256, DRAWS, **TORCHVISION)
  ref = _reference(lambda rng: torchvision_get_params(
      rng, 256, 256, (0.2, 1.0), ASPECT), DRAWS)
  return ours, ref


def test_torchvision_crop_area_matches_get_params(torchvision_draws):
  ours, ref = torchvision_draws
  area = lambda boxes: boxes[:, 2] * boxes[:, 3] / 256**2
  _same_mean(area(ours), area(ref))
  # The measurement: 0.54 for torchvision (TF's sampler: 0.50).
  assert abs(area(ours).mean() - 0.54) < 0.005
  _same_mean((area(ours) < 0.3).astype(float), (area(ref) < 0.3).astype(float))
  _ks_ok(area(ours), area(ref))


def test_torchvision_log_ratio_and_offsets(torchvision_draws):
  ours, ref = torchvision_draws
  log_ratio = lambda boxes: np.log(boxes[:, 3] / boxes[:, 2])
  _ks_ok(log_ratio(ours), log_ratio(ref))
  # Log-uniform, not uniform: the median ratio is 1 (uniform's is 1.04).
  assert abs(np.median(log_ratio(ours))) < 0.01
  # Offsets uniform on [0, 256 - side]: the crop's centre is unbiased.
  for axis in (0, 1):
    centre = (ours[:, axis] + ours[:, axis + 2] / 2) / 256
    assert abs(centre.mean() - 0.5) < 3 * centre.std() / math.sqrt(DRAWS)
    assert (ours[:, axis] >= 0).all()
    assert (ours[:, axis] + ours[:, axis + 2] <= 256).all()


@pytest.mark.parametrize('height, width', [(5, 40), (40, 5), (6, 6)])
def test_torchvision_fallback_is_the_reference_centre_crop(height, width):
  # area (1, 1) on a very wide or tall image: no attempt fits; on a square
  # one, most do (w = h = 6, the whole image). Either way it is get_params'.
  box = dict(TORCHVISION, area=(1.0, 1.0))
  ours = _ours(height, width, 50, **box)
  ref = _reference(lambda rng: torchvision_get_params(
      rng, height, width, (1.0, 1.0), ASPECT), 50)
  assert {tuple(b) for b in ours} == {tuple(b) for b in ref}


def test_simclr_sampler_matches_tf_kernel():
  # SimCLR's reference: area (0.08, 1), min_object_covered 0.1, 100 tries.
  box = dict(impl='tf', area=(0.08, 1.0), aspect=ASPECT,
             min_object_covered=0.1, max_attempts=100)
  ours = _ours(256, 256, DRAWS, **box)
  ref = _reference(lambda rng: tf_sampler(rng, 256, 256, (0.08, 1.0), ASPECT,
                                          0.1, 100), DRAWS)
  area = lambda hw: hw[:, 0] * hw[:, 1] / 256**2
  ours_area, ref_area = area(ours[:, 2:]), area(ref)
  _same_mean(ours_area, ref_area)
  _ks_ok(ours_area, ref_area)
  # min_object_covered=0.1 with the whole image as the box: area >= 0.1.
  assert ours_area.min() >= 0.1 and ref_area.min() >= 0.1
  # The side is uniform, so the area is not: more small crops than
  # torchvision's uniform area would give.
  assert np.median(ours_area) < (0.1 + 1.0) / 2 - 0.05


def test_tf_and_torchvision_samplers_differ_as_measured():
  tf_box = dict(TORCHVISION, impl='tf')
  area = lambda b: b[:, 2] * b[:, 3] / 256**2
  tf_area = area(_ours(256, 256, 4000, **tf_box))
  assert abs(tf_area.mean() - 0.50) < 0.01


@pytest.mark.parametrize('kwargs', [
    dict(impl='pil'), dict(impl='torchvision', min_object_covered=0.1),
    dict(max_attempts=0), dict(min_object_covered=1.5),
    dict(antialias='yes')])
def test_bad_crop_arguments(kwargs):
  with pytest.raises(ConfigError):
    augment.random_resized_crop(16, **kwargs)
