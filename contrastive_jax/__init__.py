"""contrastive_jax: self-supervised pretraining (SimCLR, MoCo v1/v2/v3, BYOL,
SimSiam, DINO, Barlow Twins, VICReg) of ResNets and ViTs in JAX/Flax, and
the evaluation and export of the encoders it learns."""


def load_encoder(path: str):
  """The encoder of a pretraining run: `load_encoder(workdir)(images) -> h`.

  See `contrastive_jax.pretrained`. Imported lazily:
  `import contrastive_jax` stays cheap.
  """
  # pylint: disable-next=g-import-not-at-top
  from contrastive_jax import pretrained
  return pretrained.load_encoder(path)
