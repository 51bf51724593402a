"""gaussian_blur's `kernel_size` and `padding` options (issue 23): host and
device twins agree, and each matches an independent NumPy blur."""

import numpy as np
import pytest
import tensorflow as tf

from contrastive_jax.data import augment
from contrastive_jax.errors import ConfigError
from tests.test_device_ops import _host_and_device


def _numpy_blur(image, sigma, radius, mode):
  """A separable Gaussian of 2r + 1 taps, float64; mode as np.pad's."""
  x = np.arange(-radius, radius + 1)
  taps = np.exp(-x**2 / (2 * sigma**2))
  taps /= taps.sum()
  padded = np.pad(image.astype(np.float64),
                  [(radius, radius), (radius, radius), (0, 0)], mode=mode)
  h, w = image.shape[:2]
  rows = sum(t * padded[k:k + h] for k, t in enumerate(taps))
  return np.clip(sum(t * rows[:, k:k + w] for k, t in enumerate(taps)), 0, 1)


@pytest.mark.parametrize('kwargs, radius, mode', [
    (dict(kernel_size=13), 6, 'reflect'),
    (dict(kernel_size=13, padding='zeros'), 6, 'constant'),
    (dict(padding='zeros'), 1, 'constant'),   # 10% of 32 px: 3 taps
])
def test_blur_options_match_numpy(kwargs, radius, mode):
  rng = np.random.default_rng(0)
  image = rng.uniform(size=(32, 32, 3)).astype(np.float32)
  op = augment.gaussian_blur(p=1.0, sigma=(2.0, 2.0), **kwargs)
  out = op.apply(tf.constant(image[None]), tf.zeros([1, 2]))[0].numpy()
  np.testing.assert_allclose(out, _numpy_blur(image, 2.0, radius, mode),
                             atol=2e-6)


@pytest.mark.parametrize('kwargs', [
    dict(p=0.5, kernel_size=13), dict(p=1.0, kernel_size=7, padding='zeros'),
    dict(p=0.5, padding='zeros')])
def test_device_blur_options_equal_the_host(kwargs):
  want, got, _ = _host_and_device('gaussian_blur', kwargs, (8, 32, 32))
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_kernel_widths_against_pil():
  # The numbers configs/simsiam.py:cifar10 states: at sigma 2, 10% of 32 px
  # (3 taps) has std 0.80, 13 taps 1.99 (PIL's GaussianBlur(2): 2.03,
  # measured on an impulse).
  def std(taps, sigma=2.0):
    x = np.arange(taps) - taps // 2
    k = np.exp(-x**2 / (2 * sigma**2))
    return np.sqrt((k / k.sum() * x**2).sum())
  assert std(3) == pytest.approx(0.80, abs=0.005)
  assert std(13) == pytest.approx(1.99, abs=0.005)


def test_zero_padding_darkens_the_border_only():
  image = np.full((1, 32, 32, 3), 0.5, np.float32)
  op = augment.gaussian_blur(p=1.0, sigma=(2.0, 2.0), padding='zeros')
  out = op.apply(tf.constant(image), tf.zeros([1, 2]))[0].numpy()
  assert out[0, 0, 0] < 0.5 and out[16, 16, 0] == pytest.approx(0.5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(kernel_size=4), 'kernel_size must be an odd integer'),
    (dict(kernel_size=True), 'kernel_size must be an odd integer'),
    (dict(padding='edge'), 'padding must be one of reflect, zeros'),
])
def test_bad_blur_options(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    augment.gaussian_blur(**kwargs)


def test_a_kernel_wider_than_the_image_must_pad_with_zeros():
  op = augment.gaussian_blur(p=1.0, kernel_size=41)
  with pytest.raises(ConfigError, match="padding='zeros'"):
    op.apply(tf.zeros([1, 16, 16, 3]), tf.zeros([1, 2]))
