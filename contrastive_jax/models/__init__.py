"""Encoders by name, and the projection head."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from contrastive_jax.errors import ConfigError
from contrastive_jax.models.input_norm import INPUT_NORMS
from contrastive_jax.models import norm
from contrastive_jax.models import pixels
from contrastive_jax.models import resnet
from contrastive_jax.models import vit
from contrastive_jax.models.heads import ProjectionHead
from contrastive_jax.config import lib as config_lib

# Config name -> constructor taking ResNet's keyword fields.
ENCODERS = {
    'resnet18': resnet.ResNet18,
    'resnet34': resnet.ResNet34,
    'resnet50': resnet.ResNet50,
    'resnet101': resnet.ResNet101,
    'resnet152': resnet.ResNet152,
    'tiny_resnet': resnet.TinyResNet,
    'small_resnet': resnet.SmallResNet,  # the small-data recipes'
}

# Config name -> ViT constructor (models/vit.py), taking `patch_size`,
# `dtype` and `input_norm`.
VIT_ENCODERS = {
    'vit_tiny': vit.ViTTiny,
    'vit_small': vit.ViTSmall,
    'vit_base': vit.ViTBase,
    'tiny_vit': vit.TinyViT,  # tests/demo: 32 wide, 2 blocks, 4 heads
}

WIDTH_MULTIPLIERS = (1, 2, 4)


def _check_choice(field: str, value, allowed):
  if value not in allowed:
    raise ConfigError(f'{field} must be one of '
                      f'{", ".join(map(str, allowed))}; got {value!r}')


def create_encoder(
    name: str,
    *,
    width_multiplier: int = 1,
    cifar_stem: bool = False,
    dtype: Any = jnp.float32,
    bn_axis_name: str | None = None,
    bn_groups: int | None = None,
    conv_init: str = 'simclr',
    zero_init_residual: bool = True,
    input_norm: str = 'none',
    patch_size: int = 16,
    bn_impl: str = 'flax',
    drop_path_rate: float = 0.0,
    num_heads: int = 0,
    vit_position_embedding: str = 'sincos',
    vit_init: str = 'moco_v3',
    image_size: int = 224,
) -> nn.Module:
  """Builds the encoder called `name`; its `feature_dim` is the size of h.

  `bn_axis_name` and `bn_groups` choose the BatchNorm; `conv_init`,
  `zero_init_residual` and `input_norm` follow a reference (see `ResNet`).
  A ViT (`VIT_ENCODERS`) has no BatchNorm and its own init: it ignores
  `bn_axis_name`, `bn_groups`, `conv_init` and `zero_init_residual`, takes
  `patch_size` (8 or 16), and needs width_multiplier 1 and no cifar_stem.
  A ResNet needs the default patch_size 16. `bn_impl` (`norm.BN_IMPLS`)
  picks the ResNet's BatchNorm code, 'flax' or 'fused' (same variables and
  numbers; fewer memory passes); a ViT ignores it. `drop_path_rate` (in
  [0, 1)) is a ViT's stochastic depth (`vit.ViT`); a ResNet needs 0.
  `num_heads` > 0 replaces a ViT's own head count (DINO's ViT-S has 6,
  MoCo v3's and ours 12: the same parameters, another function); 0 keeps
  it, and a ResNet needs 0. `vit_position_embedding` ('sincos' or DINO's
  'learned', a table for the grid of `image_size`) and `vit_init`
  ('moco_v3' or 'dino') choose a ViT's positions and init (`vit.ViT`); a
  ResNet needs the defaults.
  """
  if name not in ENCODERS and name not in VIT_ENCODERS:
    raise ConfigError(f'model must be one of '
                      f'{", ".join([*ENCODERS, *VIT_ENCODERS])}; got {name!r}')
  # `in` alone would accept True (== 1).
  if (isinstance(width_multiplier, bool)
      or width_multiplier not in WIDTH_MULTIPLIERS):
    raise ConfigError(
        f'width_multiplier must be one of '
        f'{", ".join(map(str, WIDTH_MULTIPLIERS))}; got {width_multiplier!r}')
  _check_choice('conv_init', conv_init, resnet.CONV_INITS)
  _check_choice('input_norm', input_norm, INPUT_NORMS)
  _check_choice('patch_size', patch_size, vit.PATCH_SIZES)
  _check_choice('bn_impl', bn_impl, norm.BN_IMPLS)
  if (isinstance(drop_path_rate, bool)
      or not isinstance(drop_path_rate, (int, float))
      or not 0 <= drop_path_rate < 1):
    raise ConfigError(f'drop_path_rate must be a number in [0, 1); got '
                      f'{drop_path_rate!r}')
  if (isinstance(num_heads, bool) or not isinstance(num_heads, int)
      or num_heads < 0):
    raise ConfigError(f'vit_num_heads must be an integer >= 0 (0: the '
                      f"model's own); got {num_heads!r}")
  _check_choice('vit_position_embedding', vit_position_embedding,
                vit.POSITION_EMBEDDINGS)
  _check_choice('vit_init', vit_init, vit.INITS)
  if name in VIT_ENCODERS:
    if vit_position_embedding == 'learned' and (
        isinstance(image_size, bool) or not isinstance(image_size, int)
        or image_size < patch_size or image_size % patch_size):
      raise ConfigError(
          f"vit_position_embedding='learned' makes a table for the grid of "
          f'image_size, which must be a multiple of patch_size {patch_size}; '
          f'got {image_size!r}')
    return _create_vit(name, width_multiplier=width_multiplier,
                       cifar_stem=cifar_stem, dtype=dtype,
                       input_norm=input_norm, patch_size=int(patch_size),
                       drop_path_rate=float(drop_path_rate),
                       num_heads=num_heads, vit_options=dict(
                           position_embedding=vit_position_embedding,
                           weight_init=vit_init, image_size=image_size))
  for field, value, default in (
      ('vit_position_embedding', vit_position_embedding, 'sincos'),
      ('vit_init', vit_init, 'moco_v3')):
    if value != default:
      raise ConfigError(f'{field} applies to ViTs only; model {name!r} '
                        f'needs {default!r}, got {value!r}')
  if num_heads:
    raise ConfigError(f'vit_num_heads applies to ViTs only; model {name!r} '
                      f'needs 0, got {num_heads!r}')
  if drop_path_rate:
    raise ConfigError(f'drop_path_rate applies to ViTs only; model {name!r} '
                      f'needs 0, got {drop_path_rate!r}')
  if patch_size != 16:
    raise ConfigError(f'patch_size applies to ViTs only; model {name!r} '
                      f'needs the default 16, got {patch_size!r}')
  return ENCODERS[name](
      width_multiplier=int(width_multiplier), cifar_stem=cifar_stem,
      dtype=dtype, bn_axis_name=bn_axis_name, bn_groups=bn_groups,
      conv_init=conv_init, zero_init_residual=bool(zero_init_residual),
      input_norm=input_norm, bn_impl=bn_impl)


def _create_vit(name: str, *, width_multiplier: int, cifar_stem: bool,
                dtype: Any, input_norm: str, patch_size: int,
                drop_path_rate: float, num_heads: int,
                vit_options: dict) -> nn.Module:
  """`VIT_ENCODERS[name]`, after the checks of ResNet-only fields."""
  if width_multiplier != 1:
    raise ConfigError(f'width_multiplier must be 1 for ViT model {name!r}; '
                      f'got {width_multiplier!r}')
  if cifar_stem:
    raise ConfigError(f'cifar_stem applies to ResNets only; set it False '
                      f'for ViT model {name!r} (patch_size sets its stem)')
  heads = {} if not num_heads else {'num_heads': num_heads}
  encoder = VIT_ENCODERS[name](patch_size=patch_size, dtype=dtype,
                               input_norm=input_norm,
                               drop_path_rate=drop_path_rate,
                               **vit_options, **heads)
  if encoder.width % encoder.num_heads:
    raise ConfigError(f'vit_num_heads={encoder.num_heads} does not divide '
                      f'the width {encoder.width} of ViT model {name!r}')
  return encoder


# Encoder constructor argument -> the config field it is read from (each
# field's one default: config_lib.value).
_ENCODER_FIELDS = dict(conv_init="conv_init",
                       zero_init_residual="zero_init_residual",
                       input_norm="input_norm", patch_size="patch_size",
                       bn_impl="bn_impl", num_heads="vit_num_heads",
                       vit_position_embedding="vit_position_embedding",
                       vit_init="vit_init", image_size="image_size")


def encoder_options(config) -> dict:
  """`create_encoder`'s reference-following keywords from a config.

  Checkpoints written before these fields existed get the values they
  were trained with (SimCLR-style init, no input normalisation); only
  `input_norm` matters once trained, and it was always 'none'. `patch_size`
  (ViTs only) defaults to 16, `vit_num_heads` to 0 (the model's own
  heads), `bn_impl` to 'flax' (the implementation
  does not change the variables, so any checkpoint loads under either),
  `vit_position_embedding` and `vit_init` to MoCo v3's ('sincos',
  'moco_v3'), as every ViT was before they existed.
  """
  return {arg: config_lib.value(config, field)
          for arg, field in _ENCODER_FIELDS.items()}


def check_config(config) -> None:
  """The encoder's fields (model, width, stem, init, input norm, patch
  size, BN implementation): run by `config.checks.validate` before anything
  is built. It is `create_encoder`'s own checking: building the module
  object makes no parameters and costs nothing. The pixels baseline is
  not a model to train: it is asked for with `pretrained=pixels`."""
  if config.model == pixels.NAME:
    raise ConfigError(f"model {pixels.NAME!r} is the pixels baseline of "
                      "linear evaluation (--config.pretrained=pixels), not an "
                      "encoder to train")
  encoder_from_config(config, bn_axis_name=None)


def compute_dtype(config) -> Any:
  """bfloat16 with `half_precision` (params, BN statistics and the loss stay
  float32), else float32."""
  return jnp.bfloat16 if config.half_precision else jnp.float32


def encoder_from_config(config, *, bn_axis_name: str | None,
                        bn_groups: int | None = None,
                        dtype: Any = None,
                        drop_path_rate: float = 0.0) -> nn.Module:
  """The encoder a (pretraining or evaluation) config names: the one place
  every method, the classifiers and `load_encoder` build it. `dtype`
  defaults to the config's `compute_dtype`. `model='pixels'` (an
  evaluation config's baseline, `pixels.Pixels`) is the image itself; the
  validation layer (`check_config`) refuses it for training an encoder.
  `drop_path_rate`: a ViT's stochastic depth in training, 0 unless the
  caller asks (DINO's student, from its `config.drop_path_rate`): every
  evaluation, classifier and teacher builds the encoder without it, and
  it has no variables, so checkpoints do not change."""
  if config.model == pixels.NAME:
    return pixels.Pixels(image_size=int(config.image_size))
  return create_encoder(
      config.model, width_multiplier=config.width_multiplier,
      cifar_stem=config.cifar_stem,
      dtype=compute_dtype(config) if dtype is None else dtype,
      bn_axis_name=bn_axis_name, bn_groups=bn_groups,
      drop_path_rate=drop_path_rate, **encoder_options(config))


__all__ = ['ENCODERS', 'VIT_ENCODERS', 'ProjectionHead', 'check_config',
           'compute_dtype', 'create_encoder', 'encoder_from_config',
           'encoder_options']
