"""The online linear probe: a classifier on stop-gradient encoder features,
trained alongside pretraining to watch representation quality (as SimCLR's
reference implementation does). Its loss is added to the method's loss, but
the stop-gradient keeps it from shaping the encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class LinearProbe(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, h):
    return nn.Dense(self.num_classes, name="linear")(
        jax.lax.stop_gradient(h).astype(jnp.float32))


def loss_and_accuracy(logits, labels, *, axis_name):
  """Mean cross-entropy and accuracy over the labelled examples (label >= 0)
  of the global batch."""
  labelled = (labels >= 0).astype(jnp.float32)
  safe_labels = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe_labels)
  hits = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  sums = jnp.stack([jnp.sum(ce * labelled), jnp.sum(hits * labelled),
                    jnp.sum(labelled)])
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  count = jnp.maximum(sums[2], 1.0)
  return sums[0] / count, sums[1] / count


def grad_norms(grads) -> dict:
  """{'grad_norm': of the method's own parameters, 'probe_grad_norm': of the
  probe's (when the tree has a 'probe' entry)}: the probe's gradient would
  otherwise dominate the one that reports on training the encoder."""
  if not isinstance(grads, dict) or "probe" not in grads:
    return {"grad_norm": optax.tree.norm(grads)}
  own = {k: v for k, v in grads.items() if k != "probe"}
  return {"grad_norm": optax.tree.norm(own),
          "probe_grad_norm": optax.tree.norm(grads["probe"])}
