"""Each colour jitter impl against the reference it imitates, to float
rounding: SimCLR v1/v2 against TF's own tf.image.adjust_* ops in the order
and clipping of their color_jitter_rand, torchvision's ColorJitter against
its functional_tensor formulas written out in NumPy (float64)."""

import numpy as np
import pytest
import tensorflow as tf

from contrastive_jax.data import color_jitter

# Uniform layout of color_jitter(p < 1, random order, four ops):
# [coin, four order keys, four draws in SimCLR's op order].
ORDER, DRAW = slice(1, 5), slice(5, 9)


def _images(count, side=12, seed=0):
  images = np.random.default_rng(seed).uniform(
      size=(count, side, side, 3)).astype(np.float32)
  # Grey, black, white, saturated, tied and nearly saturated pixels.
  images[:, 0, :7] = [[0.5, 0.5, 0.5], [0, 0, 0], [1, 1, 1], [1, 0, 0],
                      [0.2, 0.7, 0.7], [0.9, 0.9, 0.1], [0.95, 0.02, 0.9]]
  return images


def _ranges(impl, strength=1.0):
  """[low, high] of each op's draw, from the references' own arguments."""
  b, c, s, h = 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength
  brightness = (-b, b) if impl == 'simclr_v1' else (max(0, 1 - b), 1 + b)
  return np.array([brightness, (1 - c, 1 + c), (1 - s, 1 + s), (-h, h)],
                  np.float32)


def _draws(uniforms, impl, strength=1.0):
  ranges = _ranges(impl, strength)
  return ranges[:, 0] + uniforms[DRAW] * (ranges[:, 1] - ranges[:, 0])


def simclr_reference(image, impl, draws, order):
  """SimCLR's color_jitter_rand (v1 data_util.py:105-151, v2
  tf2/data_util.py:119-173): the ops in a permuted order, each a TF op,
  clipped to [0, 1] after each."""
  x = tf.constant(image)
  for i in order:
    if i == 0:  # v1: tf.image.random_brightness; v2: image * factor.
      x = (tf.image.adjust_brightness(x, draws[0]) if impl == 'simclr_v1'
           else x * draws[0])
    elif i == 1:
      x = tf.image.adjust_contrast(x, draws[1])
    elif i == 2:
      x = tf.image.adjust_saturation(x, draws[2])
    else:
      x = tf.image.adjust_hue(x, draws[3])
    x = tf.clip_by_value(x, 0.0, 1.0)
  return x.numpy()


def _gray(img):
  return 0.2989 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def _blend(img1, img2, ratio):
  return np.clip(ratio * img1 + (1.0 - ratio) * img2, 0.0, 1.0)


def _rgb2hsv(img):
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  maxc, minc = img.max(-1), img.min(-1)
  eqc = maxc == minc
  cr = maxc - minc
  s = cr / np.where(eqc, 1.0, maxc)
  cr_divisor = np.where(eqc, 1.0, cr)
  rc, gc, bc = ((maxc - x) / cr_divisor for x in (r, g, b))
  hr = (maxc == r) * (bc - gc)
  hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
  hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
  h = np.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
  return h, s, maxc


def _hsv2rgb(h, s, v):
  i = np.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(np.int32) % 6
  p = np.clip(v * (1.0 - s), 0.0, 1.0)
  q = np.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = np.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  table = np.stack([np.stack(c, -1) for c in (
      (v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))], -2)
  return np.take_along_axis(table, i[..., None, None], -1)[..., 0]


def torchvision_reference(image, draws, order):
  """torchvision ColorJitter.forward: F.adjust_* of functional_tensor in
  the randperm order (the blends clamp; hue stays in [0, 1])."""
  x = image.astype(np.float64)
  for i in order:
    if i == 0:
      x = _blend(x, np.zeros_like(x), draws[0])
    elif i == 1:
      x = _blend(x, _gray(x).mean(), draws[1])
    elif i == 2:
      x = _blend(x, _gray(x)[..., None], draws[2])
    else:
      h, s, v = _rgb2hsv(x)
      x = _hsv2rgb(np.mod(h + draws[3], 1.0), s, v)
  return x


def _unknown_size(op):
  return tf.function(op.apply, input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32),
      tf.TensorSpec([None, op.num_uniforms], tf.float32)])


@pytest.mark.parametrize('impl', ['simclr_v1', 'simclr_v2', 'torchvision'])
@pytest.mark.parametrize('path', ['compiled', 'partitioned'])
def test_jitter_matches_its_reference(impl, path):
  op = color_jitter.color_jitter(1.0, p=0.8, impl=impl)
  count = 12
  images = _images(count)
  uniforms = np.random.default_rng(1).uniform(
      size=(count, op.num_uniforms)).astype(np.float32)
  uniforms[:2, 0] = [0.1, 0.9]  # One applied, one skipped for sure.
  apply = op.apply if path == 'compiled' else _unknown_size(op)
  out = apply(tf.constant(images), tf.constant(uniforms)).numpy()
  for i in range(count):
    if uniforms[i, 0] >= 0.8:
      np.testing.assert_array_equal(out[i], images[i])
      continue
    draws = _draws(uniforms[i], impl)
    order = np.argsort(uniforms[i, ORDER])
    if impl == 'torchvision':
      expected = torchvision_reference(images[i], draws, order)
    else:
      expected = simclr_reference(images[i], impl, draws, order)
    np.testing.assert_allclose(out[i], expected, atol=1e-5, err_msg=str(i))


@pytest.mark.parametrize('factor', [0.0, 0.3, 1.0, 1.7, 5.0])
def test_hsv_saturation_is_tf_adjust_saturation(factor):
  # Factors past 1 / S saturate the pixel (S clipped to 1 in HSV).
  images = _images(1, seed=2)
  impl = color_jitter.IMPLS['simclr_v1']
  saturate = impl[2]
  out = saturate(tf.constant(images), tf.constant([factor])).numpy()
  np.testing.assert_allclose(
      out[0], tf.image.adjust_saturation(images[0], factor).numpy(),
      atol=2e-6)


def test_simclr_v1_brightness_is_additive_and_v2_multiplicative():
  image = np.full((1, 4, 4, 3), 0.25, np.float32)
  uniforms = np.zeros((1, 1 + 4 + 4), np.float32)
  uniforms[0, DRAW] = 0.5  # Mid-range: contrast, saturation, hue identity.
  uniforms[0, 5] = 0.75    # v1: delta 0.4; v2: factor 1.4.
  expected = {'simclr_v1': 0.65, 'simclr_v2': 0.35, 'torchvision': 0.35}
  for impl, value in expected.items():
    op = color_jitter.color_jitter(1.0, p=0.8, impl=impl)
    out = op.apply(tf.constant(image), tf.constant(uniforms)).numpy()
    np.testing.assert_allclose(out, value, atol=1e-6, err_msg=impl)


def test_contrast_mean_per_channel_for_simclr_grey_for_torchvision():
  # A red/blue image: per-channel means keep each channel's own mean; the
  # grey mean (one scalar) pulls both channels to the same level.
  image = np.zeros((1, 2, 2, 3), np.float32)
  image[0, 0] = [0.8, 0.0, 0.2]
  image[0, 1] = [0.4, 0.0, 0.6]
  op_args = dict(brightness=0, saturation=0, hue=0, contrast=1.0, p=1.0)
  uniforms = np.zeros((1, 2), np.float32)  # Factor 0: the mean image.
  simclr = color_jitter.color_jitter(impl='simclr_v2', **op_args)
  out = simclr.apply(tf.constant(image), tf.constant(uniforms)).numpy()
  np.testing.assert_allclose(out[0, 0, 0], [0.6, 0.0, 0.4], atol=1e-6)
  tv = color_jitter.color_jitter(impl='torchvision', **op_args)
  out = tv.apply(tf.constant(image), tf.constant(uniforms)).numpy()
  grey = _gray(image[0]).mean()
  np.testing.assert_allclose(out[0, 0, 0], [grey] * 3, atol=1e-6)


def test_unknown_impl_raises():
  from contrastive_jax.errors import ConfigError
  with pytest.raises(ConfigError, match='impl'):
    color_jitter.color_jitter(impl='simclr')
