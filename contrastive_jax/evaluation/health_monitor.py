"""The health monitor of pretraining: label-free numbers (health.py) on a
fixed slice of the train split, at the kNN monitor's cadence, on labelled
and unlabelled data alike.

The slice is the first global batch of the train split's stream under a
seed of its own, with the run's first two training views: the same images
and the same two augmentations every time, whatever the step, the resume or
the device count. Its encoder features h and projections z come from the
method's network in inference mode (`Method.projection` applied to
`Method.projector_variables`); a method without a projection head
(`Method.projection` None) has its h measured as both h and z.

When the numbers say collapse (health.collapsed), the monitor logs one
warning line; with `config.stop_on_collapse` it ends the run with
`CollapseError` (one `error:` line; the checkpoints stay).
"""

import flax
import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from contrastive_jax import models, parallel
from contrastive_jax.config import lib as config_lib
from contrastive_jax.data import pipeline, view_spec
from contrastive_jax.errors import UserError
from contrastive_jax.evaluation import features, health

# The slice's stream seed: fixed, so the slice never depends on the run's.
_SLICE_SEED = 1234


class CollapseError(UserError):
  """The representation collapsed and `config.stop_on_collapse` is set."""


def settings(config) -> tuple[int, int]:
  """(every_steps, num_examples): `config.health`, -1 every_steps meaning
  the kNN monitor's `knn.every_steps`. Configs of runs from before the
  monitor existed take these defaults."""
  every = config_lib.value(config, "health.every_steps")
  if every == -1:
    every = config.knn.every_steps
  return int(every), int(config_lib.value(config, "health.num_examples"))


def wanted(config, *, method, source) -> bool:
  del source  # Labels or not: the monitor needs none.
  every, examples = settings(config)
  return method.pretrains_encoder and every > 0 and examples > 0


class HealthMonitor:
  name = "health"
  at_end = False

  def __init__(self, config, *, method, mesh, source):
    self._config, self._method, self._mesh = config, method, mesh
    self._every, wanted_examples = settings(config)
    self._warned = False
    # A whole number of examples per device, at most the split.
    n = min(wanted_examples, source.num_examples)
    self._n = max(n - n % mesh.size, 0)
    self._source, self._slice = source, None  # Made when first due.
    if method.projection is not None:
      apply = method.projection(config)
    else:  # No projection head: z is h.
      encoder = models.encoder_from_config(config, bn_axis_name=None)
      apply = lambda v, images: (encoder.apply(v, images, train=False),) * 2
    self._apply = features.sharded_feature_fn(apply, mesh)

  def _make_slice(self, source) -> dict:
    views = view_spec.training_views(self._config, 2, False)[:2]
    process_count = jax.process_count()
    make = pipeline.pretrain_stream(
        source=source, local_batch_size=self._n // process_count,
        view_specs=[spec for _, spec in views],
        view_fields=[field for field, _ in views], seed=_SLICE_SEED,
        process_index=jax.process_index(), process_count=process_count)
    batch = next(pipeline.as_numpy_iterator(make(0)))
    # Half precision on the host: 512 views of 224 px are 154 MB a view.
    return {v: batch[v].astype(np.float16) for v in ("view1", "view2")}

  def due(self, step: int, total_steps: int) -> bool:
    return step % self._every == 0 or step == total_steps

  def _features(self, variables, images):
    """(h, z) of `images` (this process's rows), every process's rows, in
    chunks of at most eval_batch_size."""
    chunk = max(self._config.eval_batch_size // jax.process_count(), 1)
    parts = []
    for start in range(0, len(images), chunk):
      local = images[start:start + chunk].astype(np.float32)
      out = self._apply(variables, parallel.global_batch(local, self._mesh))
      parts.append([np.asarray(multihost_utils.process_allgather(
          x, tiled=True)) for x in out])
    return [np.concatenate(column) for column in zip(*parts)]

  def run(self, state, step: int) -> dict:
    if not self._n:
      return {}
    if self._slice is None:
      self._slice = self._make_slice(self._source)
    state_dict = flax.serialization.to_state_dict(state)
    method = self._method
    variables = (method.projector_variables(state_dict)
                 if method.projection is not None
                 else method.encoder_variables(state_dict))
    h1, z1 = self._features(variables, self._slice["view1"])
    _, z2 = self._features(variables, self._slice["view2"])
    values = health.metrics(h1.reshape(len(h1), -1), z1, z2)
    if health.collapsed(values):
      self._on_collapse(step, values)
    return values

  def _on_collapse(self, step: int, values: dict):
    message = (
        f"the representation collapsed at step {step}: z_std_ratio "
        f"{values['health/z_std_ratio']:.3f} (healthy ~1, collapse < "
        f"{health.COLLAPSE_STD_RATIO}), RankMe of z "
        f"{values['health/rankme_z']:.2f} (collapse < "
        f"{health.COLLAPSE_RANK}); lower the learning rate, raise the "
        "temperature or the batch, or check the augmentations")
    if config_lib.value(self._config, "stop_on_collapse"):
      raise CollapseError(message + " (stop_on_collapse: the run stops; "
                          "its checkpoints are kept)")
    if not self._warned:
      self._warned = True
      logging.warning("Collapse: %s", message)
