"""Reading a pretraining run's encoder back, and the encoder API.

A checkpoint stores the train state and the config that made it, so the
encoder can be rebuilt without the user knowing that config:

    encoder = contrastive_jax.load_encoder("workdirs/simclr_digits")
    h = encoder(images)   # float32 [B, H, W, 3] in [0, 1] -> [B, feature_dim]
"""

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from contrastive_jax import checkpointing, methods, models
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import CheckpointError, ConfigError


@dataclasses.dataclass(frozen=True)
class Pretrained:
  config: ml_collections.ConfigDict  # the pretraining run's config
  step: int                          # the checkpoint's step
  directory: str                     # <workdir>/checkpoints
  variables: Any                     # encoder {'params', 'batch_stats'}
  # The projection head's {'params', 'batch_stats'} (params['head'] of both
  # methods' EncoderWithHead); None when the checkpoint has none.
  head_variables: Any = None


def locate(path: str) -> tuple[str, int]:
  """(workdir, step) for a workdir, its checkpoints/ dir, or one step dir;
  a workdir's newest step, whether it reads back or not."""
  workdir, steps, _ = candidates(path)
  return workdir, steps[0]


def candidates(path: str) -> tuple[str, list[int], bool]:
  """(workdir, steps newest first, whether `path` names one step) for a
  workdir, its checkpoints/ dir, or one step dir."""
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointError(f"pretrained checkpoint path {path} does not exist")
  step = None
  if p.name.isdigit() and p.parent.name == "checkpoints":
    step, p = int(p.name), p.parent.parent
  elif p.name == "checkpoints":
    p = p.parent
  if not (p / "checkpoints").is_dir():
    raise CheckpointError(
        f"no checkpoint in {path}: expected a pretraining workdir, its "
        "checkpoints/ directory or a checkpoints/<step> directory")
  ckpt = checkpointing.Checkpointer(os.fspath(p), save_every_steps=1, keep=1,
                                    read_only=True)
  steps = ckpt.all_steps()
  if step is None:
    if not steps:
      raise CheckpointError(f"no checkpoint in {path}")
    return os.fspath(p), sorted(steps, reverse=True), False
  if step not in steps:
    raise CheckpointError(f"{path} is not a complete checkpoint")
  return os.fspath(p), [step], True


def _newest_readable(ckpt: checkpointing.Checkpointer, steps: list[int],
                     named: bool, read: Callable[[int], Any]) -> Any:
  """`read(step)` of the first of `steps` that reads back. A damaged step
  is skipped with a warning, unless the path named it."""
  damaged = []
  for step in steps:
    try:
      return read(step)
    except checkpointing.DamagedCheckpoint as e:
      if named:
        raise
      logging.warning("Skipping damaged checkpoint step %d in %s: %s", step,
                      ckpt.directory, e.why)
      damaged.append(e)
  raise checkpointing.none_reads_back(ckpt.directory, damaged)


def read_config(path: str) -> ml_collections.ConfigDict:
  """The config of a workdir's newest step whose config reads back and
  builds the encoder its arrays hold, or of the step `path` names. (`load`
  goes back further if that step's arrays are damaged: a run's steps share
  one architecture.)"""
  workdir, steps, named = candidates(path)
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=1,
                                    read_only=True)

  def read(step):
    # As stored (a classifier copies its architecture fields; readers take
    # a missing one's default through config_lib.value).
    config = ml_collections.ConfigDict(ckpt.restore_config(step))
    check_architecture(ckpt, step, config, ckpt.state_metadata(step))
    return config

  return _newest_readable(ckpt, steps, named, read)


def _method_of(ckpt, step: int, config):
  try:
    return methods.get_method(config.method)
  except (ValueError, KeyError, OSError, ConfigError, AttributeError) as e:
    raise CheckpointError(
        f"checkpoint {ckpt.directory}/{step} has no readable config: "
        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def check_architecture(ckpt, step: int, config, state_tree) -> None:
  """DamagedCheckpoint unless the encoder that the stored `config` builds
  has exactly the names and shapes of the encoder arrays `state_tree` (the
  restored state, or its metadata) holds: a stored config that parses but
  names another architecture is not trusted. Names the first path that
  differs."""
  method = _method_of(ckpt, step, config)
  if not method.pretrains_encoder:
    return  # `load` says why such a checkpoint has no encoder.
  try:
    module = encoder_module(config)
    size = int(config.image_size)
    want = jax.eval_shape(
        lambda x: module.init(jax.random.PRNGKey(0), x, train=False),
        jax.ShapeDtypeStruct((1, size, size, 3), jax.numpy.float32))
  except Exception as e:  # pylint: disable=broad-except
    raise checkpointing.DamagedCheckpoint(
        ckpt.directory, step, f"its stored config does not build an encoder "
        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    ) from e
  try:
    got = method.encoder_variables(state_tree)
  except (KeyError, TypeError, AttributeError) as e:
    raise checkpointing.DamagedCheckpoint(
        ckpt.directory, step, f"its state holds no encoder ({e})") from e
  shapes = lambda tree: {
      jax.tree_util.keystr(path): tuple(leaf.shape)
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  want_shapes = shapes({k: want.get(k, {}) for k in ("params",
                                                     "batch_stats")})
  got_shapes = shapes(got)
  for name in sorted(set(want_shapes) | set(got_shapes)):
    if want_shapes.get(name) != got_shapes.get(name):
      raise checkpointing.DamagedCheckpoint(
          ckpt.directory, step,
          f"its stored config (model={config.get('model')!r}) does not "
          f"match its arrays: encoder{name} is "
          f"{got_shapes.get(name, 'missing')} in the checkpoint, "
          f"{want_shapes.get(name, 'absent')} for that config")


def encoder_module(config: ml_collections.ConfigDict):
  """The encoder architecture named by a (pretraining or eval) config."""
  return models.encoder_from_config(config, bn_axis_name=None)


def load(path: str, sharding=None) -> Pretrained:
  """Restores the encoder of the pretraining checkpoint at `path`.

  Arrays are placed with `sharding` (default: this process's first device).
  A workdir gives its newest step that reads back (a damaged newer one is
  skipped with a warning); a step directory gives that step or an error.
  """
  workdir, steps, named = candidates(path)
  ckpt = checkpointing.Checkpointer(workdir, save_every_steps=1, keep=1,
                                    read_only=True)
  return _newest_readable(
      ckpt, steps, named,
      lambda step: _load_step(ckpt, step, sharding=sharding))


def _load_step(ckpt: checkpointing.Checkpointer, step: int, *,
               sharding) -> Pretrained:
  config = config_lib.upgrade(ckpt.restore_config(step))
  method = _method_of(ckpt, step, config)
  if not method.pretrains_encoder:
    raise CheckpointError(
        f"checkpoint {ckpt.directory}/{step} was written by method "
        f"{config.method!r}, which pretrains no encoder; give a pretraining "
        f"run ({', '.join(methods.pretraining_methods())})")
  sharding = sharding or jax.sharding.SingleDeviceSharding(
      jax.local_devices()[0])
  # The checkpoint's own metadata gives every array's shape and dtype, so
  # nothing about the method's optimizer or extras must be rebuilt.
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
      ckpt.state_metadata(step))
  check_architecture(ckpt, step, config, abstract)
  state = ckpt.restore(abstract, step=step)
  head = state.get("params", {}).get("head")
  head_variables = None if head is None else {
      "params": head,
      "batch_stats": state.get("batch_stats", {}).get("head", {})}
  return Pretrained(config=config, step=step, directory=ckpt.directory,
                    variables=method.encoder_variables(state),
                    head_variables=head_variables)


class Encoder:
  """A pretrained encoder as a function: images -> representations h."""

  def __init__(self, pretrained: Pretrained):
    self.config = pretrained.config
    self.step = pretrained.step
    self.image_size = int(self.config.image_size)
    self.variables = pretrained.variables
    self.module = encoder_module(self.config)
    self._apply = jax.jit(
        lambda variables, x: self.module.apply(variables, x, train=False))

  @property
  def feature_dim(self) -> int:
    return self.module.feature_dim

  def __call__(self, images) -> np.ndarray:
    """float32 [B, S, S, 3] in [0, 1] (or uint8 in [0, 255]), S=image_size."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    if images.ndim != 4 or images.shape[1:] != (self.image_size,
                                                self.image_size, 3):
      raise ValueError(f"expected images of shape [B, {self.image_size}, "
                       f"{self.image_size}, 3], got {images.shape}")
    return np.asarray(self._apply(self.variables, images))


def load_encoder(path: str) -> Encoder:
  """The encoder of the pretraining run (workdir or checkpoint) at `path`."""
  return Encoder(load(path))
