"""DINO's learned position table at another grid: its bicubic resize
(facebookresearch/dino vision_transformer.py:174-194 @7c446df
`interpolate_pos_encoding`), as static matrices, so it runs on jax arrays
(inside the ViT) and NumPy ones (the timm export) alike.

It is torch's bicubic given a scale factor, which is not
`jax.image.resize(..., 'bicubic')`: torch's kernel has A = -0.75 (JAX's
Keys kernel -0.5), clamps indices at the border (JAX renormalises the
weights), never antialiases (JAX widens the kernel to downsample), and
DINO's +0.1 sets the sampling positions (tests/test_vit_dino.py
measures the difference).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
  """torch's cubic convolution weights of the 4 taps around a source
  coordinate with fraction `t` (aten UpSample.h
  `get_cubic_upsample_coefficients`, A = -0.75)."""
  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] float64: DINO's resize of one axis of the position
  grid (dino vision_transformer.py:182-191), torch's
  `interpolate(mode='bicubic', align_corners=False)` given the scale factor
  (size_out + 0.1) / size_in (the +0.1 of :186): output j reads the source
  coordinate (j + 0.5) size_in / (size_out + 0.1) - 0.5, 4 taps with
  torch's weights, indices clamped to the grid (no antialiasing)."""
  out = np.zeros((size_out, size_in))
  step = size_in / (size_out + 0.1)
  for j in range(size_out):
    source = (j + 0.5) * step - 0.5
    base = math.floor(source)
    for k, w in enumerate(_cubic_weights(source - base)):
      out[j, min(max(base - 1 + k, 0), size_in - 1)] += w
  return out


def position_table(table, grid_h: int, grid_w: int):
  """The learned table [1, 1 + G*G, D] for a grid_h x grid_w grid of
  patches, DINO's `interpolate_pos_encoding` (dino vision_transformer.py:
  174-194): the table itself for its own grid (:177-178); otherwise the
  cls row as it is, and the G x G patch rows resized bicubically
  (`bicubic_matrix`) along rows and columns. `table` a jax or NumPy
  array; the result is of the same kind, in its dtype."""
  g = math.isqrt(table.shape[1] - 1)
  if (grid_h, grid_w) == (g, g):
    return table
  rows = bicubic_matrix(g, grid_h).astype(table.dtype)
  cols = bicubic_matrix(g, grid_w).astype(table.dtype)
  grid = table[0, 1:].reshape(g, g, -1)
  if isinstance(table, jax.Array):
    resized = jnp.einsum('ir,rcd,jc->ijd', rows, grid, cols,
                         precision=jax.lax.Precision.HIGHEST)
    concatenate = jnp.concatenate
  else:
    resized = np.einsum('ir,rcd,jc->ijd', rows, grid, cols)
    concatenate = np.concatenate
  return concatenate(
      [table[:, :1], resized.reshape(1, grid_h * grid_w, -1)], axis=1)
