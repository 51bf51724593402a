"""The network every pretraining method trains: encoder f (representation
h, the part evaluated downstream), projection head g (z, what the loss
sees) and, optionally, an online linear probe on stop-gradient(h)."""

from typing import Callable

import flax.linen as nn
import ml_collections

from contrastive_jax import models
from contrastive_jax.methods import online_probe as probe_lib


class EncoderWithHead(nn.Module):
  """(h, z, probe logits or None) of a batch of images."""
  encoder: nn.Module
  head: nn.Module
  probe: nn.Module | None = None

  def __call__(self, images, train: bool):
    h = self.encoder(images, train=train)
    logits = self.probe(h) if self.probe is not None else None
    return h, self.head(h, train=train), logits


class OnlineNetwork(nn.Module):
  """(h, z, prediction q(z), probe logits or None) of a batch of images:
  an encoder and projector with a predictor on top (BYOL's online network,
  SimSiam's network, MoCo v3's base network)."""
  encoder: nn.Module
  head: nn.Module       # the projector
  predictor: nn.Module
  probe: nn.Module | None = None

  def __call__(self, images, train: bool):
    h = self.encoder(images, train=train)
    z = self.head(h, train=train)
    logits = self.probe(h) if self.probe is not None else None
    return h, z, self.predictor(z, train=train), logits


def online_probe_enabled(config) -> bool:
  return bool(config.online_probe) and config.num_classes > 0


def online_and_target(config: ml_collections.ConfigDict, predictor_fields, *,
                      axis_name: str | None, **predictor_overrides
                      ) -> tuple[OnlineNetwork, EncoderWithHead]:
  """(online, target) of a method with an EMA target (BYOL, MoCo v3): the
  config's encoder, projector (`config.head`), a predictor MLP from
  `predictor_fields` (`mlp_from_config`'s block and overrides) and the
  online probe if enabled; and a target with an encoder and projector of
  its own, of the same shapes, whose params are exactly the EMA target's
  {'encoder', 'head'}. Global BN (statistics over `axis_name`)
  everywhere."""
  dtype = models.compute_dtype(config)

  def encoder_and_projector():
    return (models.encoder_from_config(config, bn_axis_name=axis_name),
            mlp_from_config(config.head, bn_axis_name=axis_name, dtype=dtype))

  encoder, projector = encoder_and_projector()
  predictor = mlp_from_config(predictor_fields, bn_axis_name=axis_name,
                              dtype=dtype, **predictor_overrides)
  probe = (probe_lib.LinearProbe(config.num_classes)
           if online_probe_enabled(config) else None)
  online = OnlineNetwork(encoder=encoder, head=projector, predictor=predictor,
                         probe=probe)
  encoder, projector = encoder_and_projector()
  return online, EncoderWithHead(encoder=encoder, head=projector)


def apply_per_view(network: nn.Module, variables: dict, views) -> tuple:
  """([network's outputs on each of `views`], the new batch_stats):
  `network` in training mode on each view in turn, so that every BN
  normalises one view's batch on its own, its running statistics threaded
  from one view to the next (those of `variables` first)."""
  outputs, stats = [], variables["batch_stats"]
  for images in views:
    out, new = network.apply({**variables, "batch_stats": stats}, images,
                             train=True, mutable=["batch_stats"])
    outputs.append(out)
    stats = new["batch_stats"]
  return outputs, stats


def create(config: ml_collections.ConfigDict, *, bn_axis_name: str | None,
           bn_groups: int | None = None) -> EncoderWithHead:
  """The config's encoder, head and probe. BatchNorm statistics are
  averaged over `bn_axis_name` (global BN), or per group of `bn_groups`
  (see `models.resnet.ResNet.bn_groups`)."""
  encoder = models.encoder_from_config(config, bn_axis_name=bn_axis_name,
                                       bn_groups=bn_groups)
  head = mlp_from_config(config.head, bn_axis_name=bn_axis_name,
                         bn_groups=bn_groups,
                         dtype=models.compute_dtype(config))
  probe = (probe_lib.LinearProbe(config.num_classes)
           if online_probe_enabled(config) else None)
  return EncoderWithHead(encoder=encoder, head=head, probe=probe)


def mlp_from_config(fields, *, bn_axis_name: str | None,
                    bn_groups: int | None = None, dtype=None,
                    **overrides) -> models.ProjectionHead:
  """A projector or predictor MLP (`models.ProjectionHead`) from a config
  block such as `config.head`; `overrides` replace its fields (e.g.
  hidden_dim). Fields a block lacks take the defaults of configs saved
  before they existed."""
  f = {"output_bias": False, "output_bn": True, "output_bn_scale": True,
       "hidden_bias": None, "dense_init": "flax", "kernel_init_stddev": -1.0}
  f.update(fields.items())
  f.update(overrides)
  return models.ProjectionHead(
      num_layers=f["num_layers"],
      hidden_dim=None if f["hidden_dim"] <= 0 else f["hidden_dim"],
      output_dim=f["output_dim"], use_bn=f["use_bn"],
      output_bn=f["output_bn"], output_bn_scale=f["output_bn_scale"],
      output_bias=f["output_bias"], hidden_bias=f["hidden_bias"],
      dense_init=f["dense_init"],
      kernel_init_stddev=(None if f["kernel_init_stddev"] <= 0
                          else f["kernel_init_stddev"]),
      bn_axis_name=bn_axis_name, bn_groups=bn_groups,
      **({} if dtype is None else {"dtype": dtype}))


def encoder_variables(state: dict) -> dict:
  """The encoder's variables out of a checkpointed state (nested dicts) of a
  method whose `state.params` is an EncoderWithHead's (SimCLR; MoCo's query
  network)."""
  return {"params": state["params"]["encoder"],
          # A ViT encoder has no BatchNorm statistics.
          "batch_stats": state.get("batch_stats", {}).get("encoder", {})}


def target_encoder_variables(state: dict) -> dict:
  """The EMA target's encoder out of a checkpointed state: the network a
  method that evaluates its target (DINO's teacher) declares as its
  `Method.encoder_variables`. Its parameters are at `ema.TARGET_PATH`, its
  BN statistics in `extra['target_batch_stats']` (`base.initial_state`)."""
  from contrastive_jax import ema  # pylint: disable=g-import-not-at-top
  stats = state.get("extra", {}).get("target_batch_stats", {})
  return {"params": ema.state_dict_target(state)["encoder"],
          "batch_stats": stats.get("encoder", {})}


def projection(config) -> Callable:
  """`Method.projection`'s default: (variables, images) -> (h, z) of the
  config's encoder and projection head (`config.head`'s MLP) in inference
  mode, for `projector_variables`' {'encoder', 'head'}."""
  network = EncoderWithHead(
      encoder=models.encoder_from_config(config, bn_axis_name=None),
      head=mlp_from_config(config.head, bn_axis_name=None,
                           dtype=models.compute_dtype(config)))
  return lambda variables, images: network.apply(variables, images,
                                                 train=False)[:2]


def projector_variables(state: dict) -> dict:
  """The encoder's and projection head's variables ({'encoder', 'head'})
  out of a checkpointed state of a method whose `state.params` holds both
  (an EncoderWithHead's or OnlineNetwork's)."""
  stats = state.get("batch_stats", {})
  return {"params": {k: state["params"][k] for k in ("encoder", "head")},
          "batch_stats": {k: stats[k] for k in ("encoder", "head")
                          if k in stats}}
