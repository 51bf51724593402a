"""The pixels "encoder": the eval view's pixels, flattened. A baseline, not a
model: linear evaluation, kNN and `embed` run it through exactly the
protocol an encoder gets (`--config.pretrained=pixels`), so a report shows
what pretraining adds over the images themselves. It has no parameters."""

import flax.linen as nn
import jax.numpy as jnp

NAME = 'pixels'


class Pixels(nn.Module):
  image_size: int

  @property
  def feature_dim(self) -> int:
    return self.image_size * self.image_size * 3

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train  # Nothing to normalise, nothing to train.
    return jnp.reshape(images, (images.shape[0], -1)).astype(jnp.float32)
