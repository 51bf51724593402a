"""Weighted k-nearest-neighbour classification of features (Wu et al. 2018,
the kNN monitor of InstDisc/MoCo): each of the k most cosine-similar bank
features votes for its label with weight exp(similarity / temperature)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from contrastive_jax.losses import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _class_scores(queries, bank, bank_labels, *, k, num_classes,
                  temperature):
  sims = l2_normalize(queries) @ l2_normalize(bank).T        # [Q, M]
  top_sims, top_idx = jax.lax.top_k(sims, k)                 # [Q, k]
  weights = jnp.exp(top_sims / temperature)
  votes = jax.nn.one_hot(bank_labels[top_idx], num_classes)  # [Q, k, C]
  return jnp.einsum("qk,qkc->qc", weights, votes)


def knn_predict(queries, bank, bank_labels, *, num_classes: int, k: int = 200,
                temperature: float = 0.1, chunk: int = 1024) -> np.ndarray:
  """Predicted labels [Q] for query features [Q, d] against a labelled bank
  [M, d] (queries in chunks: memory is O(chunk x M))."""
  bank = jnp.asarray(bank, jnp.float32)
  bank_labels = jnp.asarray(bank_labels, jnp.int32)
  k = min(k, bank.shape[0])
  out = []
  for start in range(0, len(queries), chunk):
    q = jnp.asarray(queries[start:start + chunk], jnp.float32)
    scores = _class_scores(q, bank, bank_labels, k=k,
                           num_classes=num_classes, temperature=temperature)
    out.append(np.asarray(jnp.argmax(scores, axis=-1)))
  return np.concatenate(out) if out else np.zeros((0,), np.int32)


def knn_accuracy(queries, query_labels, bank, bank_labels, **kwargs) -> float:
  predictions = knn_predict(queries, bank, bank_labels, **kwargs)
  return float(np.mean(predictions == np.asarray(query_labels)))
