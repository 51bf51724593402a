"""contrastive_jax: contrastive self-supervised pretraining (SimCLR, MoCo) in
JAX/Flax, and evaluation of the encoders it learns."""


def load_encoder(path: str):
  """The encoder of a pretraining run: `load_encoder(workdir)(images) -> h`.

  See `contrastive_jax.pretrained`. Imported lazily: `import contrastive_jax`
  stays cheap.
  """
  from contrastive_jax import pretrained  # pylint: disable=g-import-not-at-top
  return pretrained.load_encoder(path)
