"""The kNN monitor of pretraining: kNN accuracy of the encoder on the eval
split, with a bank of train-split features."""

import flax
from absl import logging

from contrastive_jax import pretrained
from contrastive_jax.evaluation import features, knn


class KnnMonitor:
  """kNN accuracy of the encoder during pretraining: a bank of train-split
  features (at most knn.bank_size), test-split queries, eval-view images."""
  name = "knn"
  at_end = False

  def __init__(self, config, *, method, mesh, bank_source, query_source):
    self._config, self._method, self._mesh = config, method, mesh
    self._bank_source, self._query_source = bank_source, query_source
    module = pretrained.encoder_module(config)
    self._embed = features.sharded_feature_fn(
        lambda variables, images: module.apply(variables, images,
                                               train=False), mesh)

  def due(self, step: int, total_steps: int) -> bool:
    every = self._config.knn.every_steps
    return step % every == 0 or step == total_steps

  def run(self, state, step: int) -> dict:
    del step
    variables = self._method.encoder_variables(
        flax.serialization.to_state_dict(state))
    return {"knn_accuracy": knn_top1(
        self._embed, variables, self._config, mesh=self._mesh,
        bank_source=self._bank_source, query_source=self._query_source)}


def knn_top1(embed, variables, config, *, mesh, bank_source,
             query_source) -> float:
  """kNN top-1 of `query_source` against a bank of `bank_source` (at most
  knn.bank_size examples; unlabelled ones left out), features
  `embed(variables, images)` (a `features.sharded_feature_fn`)."""
  bank_size = config.knn.bank_size if config.knn.bank_size > 0 else None
  bank, bank_labels = features.extract_features(
      embed, variables, config, bank_source, mesh, max_examples=bank_size)
  queries, query_labels = features.extract_features(
      embed, variables, config, query_source, mesh)
  labelled = bank_labels >= 0  # e.g. stl10 'unlabelled' stores -1
  return knn.knn_accuracy(
      queries, query_labels, bank[labelled], bank_labels[labelled],
      num_classes=int(max(bank_labels.max(), query_labels.max()) + 1),
      k=config.knn.k, temperature=config.knn.temperature)


def wanted(config, *, method, source) -> bool:
  """Whether pretraining runs the kNN monitor: a method with an encoder,
  knn.every_steps > 0, and labelled data (on unlabelled data it says once
  that it is off)."""
  if not method.pretrains_encoder or config.knn.every_steps <= 0:
    return False
  if not source.labelled:
    logging.info("kNN monitor off: dataset %s has no labels",
                 source.dataset)
    return False
  return True
