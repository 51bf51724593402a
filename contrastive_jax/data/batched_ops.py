"""Augmentation ops that keep the image size, applied to whole batches.

At 32 px a view costs little arithmetic but many small TF ops, and running
each op once per batch instead of once per example is what makes the input
pipeline fast. The colour jitter lives in color_jitter.py, on the pieces
here. Each factory returns a `BatchedOp`: all of its randomness is
`num_uniforms` numbers in [0, 1) per example, drawn up front (one stateless
draw per view, see augment.View), and `apply(images, uniforms)` maps float32
[B, H, W, C] images and [B, num_uniforms] uniforms to the augmented images.

Example i of the output depends only on image i and uniforms row i, bit for
bit, whatever else is in the batch: every op is elementwise, a per-example
reduction or 3x3 colour matrix, or (the blur) a convolution run on groups of
a fixed size (see `gaussian_blur`); tests/test_batched_augment.py checks it
on the machine that runs them. Calling an op on ONE image, `op(image,
seed)`, draws its uniforms from `seed` and runs the same code on a batch of
one, so the single-image and batched results are the same bits.

Where the image size is known when the op is traced (the batches of the
pipeline: views after their crop), flip, colour jitter, grayscale and
solarize run as an XLA-compiled loop over the examples (TF's XLA JIT on
the host CPU), consecutive ones in the same loop (`sequence`): XLA fuses
their elementwise passes, the costly hue above all, and each example
computes only the branch its coin and order pick. The blur keeps TF's
depthwise convolution (XLA:CPU's is far slower). Where the size is unknown
(an op placed before a crop, on images of any size), the same ops run as
TF ops on the batch partitioned by coin and order, so nothing is compiled
per image size; the two paths agree to float rounding.
"""

import tensorflow as tf

from contrastive_jax.data import op_args
from contrastive_jax.errors import ConfigError


class BatchedOp:
  """A size-keeping op: `apply(images, uniforms)` plus its uniform count.

  `one(image, row)`, where an op has it, is the op on ONE [H, W, C] example
  and its row of uniforms, as XLA compiles it; `sequence` runs consecutive
  such ops in one compiled loop. `per_example_op` builds such an op.
  """

  def __init__(self, num_uniforms, apply, one=None):
    self.num_uniforms = num_uniforms
    self.apply = apply
    self.one = one

  def __call__(self, image, seed):
    """The op on one [H, W, C] image, randomness from `seed` ([2] ints)."""
    uniforms = tf.random.stateless_uniform([self.num_uniforms], seed)
    return self.apply(image[None], uniforms[None])[0]


IDENTITY = BatchedOp(0, lambda images, uniforms: images,
                      one=lambda image, row: image)


def compiled_per_example(one, fallback):
  """`apply(images, uniforms)` mapping `one(image, uniforms_row)` over the
  examples in ONE XLA-compiled loop (TF's XLA JIT on the host CPU), where
  the image size is known when the op is traced: XLA fuses the op's
  elementwise passes into one, and each example computes only its own
  branch. Each example runs the same compiled code whatever its batch, so
  its bits do not depend on the batch. With an unknown image size (an op
  placed before a crop, on images of any size) XLA would compile once per
  size; `fallback(images, uniforms)` runs there instead."""

  @tf.function(jit_compile=True, autograph=False)
  def compiled(images, uniforms):
    return tf.map_fn(
        lambda args: one(*args), (images, uniforms),
        fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))

  def apply(images, uniforms):
    if images.shape[1:].is_fully_defined():
      return compiled(images, uniforms)
    return fallback(images, uniforms)
  return apply


def per_example_op(num_uniforms, one, fallback):
  """The BatchedOp of `one(image, row)`: a compiled loop over the examples
  where the size is known, `fallback(images, uniforms)` elsewhere."""
  return BatchedOp(num_uniforms, compiled_per_example(one, fallback), one=one)


def clip(images):
  return tf.clip_by_value(images, 0.0, 1.0)


def sequence(ops):
  """`ops` applied in order, as ONE BatchedOp over their uniforms side by
  side. Where the size is known, each run of consecutive ops that have
  `one` is one compiled loop over the examples (the image stays in cache
  from one op to the next); elsewhere each op's own `apply` runs."""
  runs = []
  for op in ops:
    if op.one is not None and runs and runs[-1][-1].one is not None:
      runs[-1].append(op)
    else:
      runs.append([op])
  applies = [(sum(op.num_uniforms for op in run), _run_apply(run))
             for run in runs]

  def apply(images, uniforms):
    start = 0
    for width, run_apply in applies:
      images = run_apply(images, uniforms[:, start:start + width])
      start += width
    return images
  return BatchedOp(sum(op.num_uniforms for op in ops), apply)


def _run_apply(run):
  """`apply` of consecutive ops: one compiled loop if they all have `one`."""

  def one_after_another(step):
    def run_all(x, uniforms):
      start = 0
      for op in run:
        x = step(op)(x, uniforms[..., start:start + op.num_uniforms])
        start += op.num_uniforms
      return x
    return run_all

  if len(run) == 1:
    return run[0].apply
  return compiled_per_example(one_after_another(lambda op: op.one),
                               fallback=one_after_another(lambda op: op.apply))


# ITU-R 601 luma, as tf.image.rgb_to_grayscale.
LUMA = (0.2989, 0.5870, 0.1140)


def gray(images):
  """[B, H, W] luma. On channel planes: broadcasting against a last axis
  of 1 is several times slower in TF on CPU."""
  r, g, b = tf.unstack(images, axis=-1)
  return r * LUMA[0] + g * LUMA[1] + b * LUMA[2]


def _coin(p, draw, apply):
  """Applies `apply(images, draws)` to the examples whose first uniform is
  < p (all when p = 1; none, exactly, when p = 0); `draws` are their other
  `draw` uniforms. Only the chosen examples are computed."""
  if p == 0:
    return IDENTITY

  def one(image, row):
    changed = lambda: apply(image[None], row[None, 1:])[0]
    return changed() if p == 1 else tf.cond(row[0] < p, changed,
                                             lambda: image)

  def partitioned(images, uniforms):
    if p == 1:
      return apply(images, uniforms[:, 1:])
    chosen = tf.cast(uniforms[:, 0] < p, tf.int32)
    rows = tf.dynamic_partition(tf.range(tf.shape(images)[0]), chosen, 2)
    kept, changed = tf.dynamic_partition(images, chosen, 2)
    draws = tf.dynamic_partition(uniforms[:, 1:], chosen, 2)[1]
    return tf.ensure_shape(
        tf.dynamic_stitch(rows, [kept, apply(changed, draws)]), images.shape)
  return per_example_op(1 + draw, one, fallback=partitioned)


# --- Flip, grayscale, solarize -----------------------------------------------

def flip_lr(p=0.5):
  """Mirrors the image left-right with probability p."""
  op_args.check_probability('flip_lr', p)
  return _coin(p, 0, lambda images, _: tf.reverse(images, axis=[2]))


def grayscale(p=0.2):
  """Replaces the image by its luma in all 3 channels, with probability p."""
  op_args.check_probability('grayscale', p)
  return _coin(p, 0, lambda images, _: tf.tile(gray(images)[..., None],
                                              [1, 1, 1, 3]))


def solarize(p=0.0, threshold=0.5):
  """Inverts pixels >= threshold (x -> 1 - x), with probability p (BYOL)."""
  op_args.check_solarize(p, threshold)
  return _coin(p, 0, lambda images, _: tf.where(images >= threshold,
                                                1.0 - images, images))


# --- Blur --------------------------------------------------------------------

# Examples per depthwise convolution. The convolution's rounding depends on
# its channel count, so the blurred examples always go through in groups of
# exactly this many (the last one zero-padded): an example's result is then
# the same in any batch, and for a single image.
BLUR_GROUP = 8


def _blur_group(images, stds, radius, padding):
  """Blurs [G, H, W, C] images, image i with its own stds[i], as ONE
  separable depthwise convolution with the group folded into channels."""
  group, height, width, channels = tf.unstack(tf.shape(images))
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  kernel = tf.exp(-tf.square(x)[None] / (2.0 * tf.square(stds)[:, None]))
  kernel /= tf.reduce_sum(kernel, axis=1, keepdims=True)
  taps = tf.transpose(tf.repeat(kernel, channels, axis=0))  # [2r+1, G*C]
  folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]),
                      [1, height, width, group * channels])
  folded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                  mode={'reflect': 'REFLECT', 'zeros': 'CONSTANT'}[padding])
  out = tf.nn.depthwise_conv2d(folded, taps[:, None, :, None], [1, 1, 1, 1],
                               'VALID')
  out = tf.nn.depthwise_conv2d(out, taps[None, :, :, None], [1, 1, 1, 1],
                               'VALID')
  out = tf.reshape(out, [height, width, group, channels])
  return clip(tf.transpose(out, [2, 0, 1, 3]))


def gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1,
                  kernel_size=None, padding='reflect'):
  """Gaussian blur with sigma uniform in `sigma`, with probability p.

  As SimCLR: the kernel spans `kernel_fraction` of the image side (radius =
  int(side * kernel_fraction) // 2, side = 2 * radius + 1; side is the shorter
  image side, known only when called). Below 20 px the radius is 0 and the
  blur is the identity. Because kernel_fraction < 1, the kernel always fits in
  the image, so nothing needs checking at call time. Separable (two 1-D
  depthwise convolutions) with reflect padding, which keeps a constant image
  constant. Only the examples whose coin says blur are convolved.

  `kernel_size` (odd, >= 3) fixes the kernel instead, whatever the image
  size: a blur with sigma up to 2 needs about 13 taps (+-3 sigma) to be the
  Gaussian it names, which 10% of a 32 px side (3 taps, an effective sigma
  of at most 0.8) is not. `padding='zeros'` pads with zeros instead of
  reflecting ('SAME' convolutions: SimCLR's and BYOL's blur), which darkens
  the borders of a blurred image as theirs does.
  """
  low, high = op_args.check_blur(p, sigma, kernel_fraction, kernel_size,
                                 padding)
  if p == 0:
    return IDENTITY
  pad_mode = padding  # `padding` below is the group's zero rows.

  def op(images, uniforms):
    height, width = images.shape[1:3]
    shape = tf.shape(images)
    if kernel_size is not None:
      radius = kernel_size // 2
      if (pad_mode == 'reflect' and height and width
          and radius >= min(height, width)):
        raise ConfigError(
            f'gaussian_blur: kernel_size={kernel_size} reflects more than '
            f'the {height}x{width} image: use padding=\'zeros\' or a '
            'smaller kernel')
    elif height and width and int(min(height, width) * kernel_fraction) < 2:
      return images  # Radius 0: the kernel is [1].
    else:
      side = tf.cast(tf.minimum(shape[1], shape[2]), tf.float32)
      radius = tf.cast(tf.floor(side * kernel_fraction), tf.int32) // 2
    chosen = tf.where(uniforms[:, 0] < p)  # [n, 1]
    stds = low + tf.gather_nd(uniforms[:, 1], chosen) * (high - low)
    padding = -tf.shape(chosen)[0] % BLUR_GROUP
    selected = tf.pad(tf.gather_nd(images, chosen),
                      [[0, padding], [0, 0], [0, 0], [0, 0]])
    stds = tf.pad(stds, [[0, padding]], constant_values=1.0)
    groups = tf.reshape(selected, tf.concat([[-1, BLUR_GROUP], shape[1:]], 0))
    blurred = tf.map_fn(
        lambda group: _blur_group(group[0], group[1], radius, pad_mode),
        (groups, tf.reshape(stds, [-1, BLUR_GROUP])),
        fn_output_signature=tf.TensorSpec(
            tf.TensorShape([BLUR_GROUP]).concatenate(images.shape[1:]),
            tf.float32),
        parallel_iterations=1)
    blurred = tf.reshape(blurred, tf.shape(selected))
    return tf.tensor_scatter_nd_update(
        images, chosen, blurred[:tf.shape(chosen)[0]])
  return BatchedOp(2, op)
