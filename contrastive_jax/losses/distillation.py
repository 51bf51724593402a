"""DINO's self-distillation loss (Caron et al. 2021): the cross-entropy
between the teacher's centred, sharpened softmax and the student's, over
every (global teacher view, other student view) pair; and the centre's EMA.

Reference: facebookresearch/dino main_dino.py:363-412 @7c446df (`DINOLoss`).
Run inside `shard_map` over `axis_name`, the loss is that of the global
batch: each device sums its rows' cross-entropies, the sums are `psum`med
and divided by the global count (the reference's per-GPU `loss.mean()`,
averaged over GPUs by DDP's gradient all-reduce, is the same mean).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from contrastive_jax.losses.global_batch import global_count, sum_over_devices


class DINOLossOutput(NamedTuple):
  loss: jax.Array    # the global batch's, the same on every device
  center: jax.Array  # [K] the centre after this step's update
  # [K] the teacher's mean logits over the global batch (both views): what
  # the centre moved towards.
  batch_center: jax.Array


def dino_loss(student, teacher, center, *, student_temperature,
              teacher_temperature, center_momentum: float = 0.9,
              axis_name=None) -> DINOLossOutput:
  """DINO's loss of this device's rows and the centre's update.

  Args:
    student: [V, n, K] the student's logits of V views of this device's n
      images, the two global views first (the reference's crop order,
      main_dino.py:443-448).
    teacher: [2, n, K] the teacher's logits of the two global views (a
      constant: no gradient flows into it).
    center: [K] the centre c (the state's, before this step).
    student_temperature: tau_s (0.1, main_dino.py:365).
    teacher_temperature: tau_t of this step (a scalar, may be traced).
    center_momentum: m of c <- m c + (1 - m) mean(teacher) (0.9, :366).
    axis_name: the data axis, or None on one device.

  Returns: the loss, mean over the 2 (V - 1) pairs (iq, v), v != iq, of the
  global-batch mean of -sum_k softmax((t_iq - c) / tau_t)_k
  log_softmax(s_v / tau_s)_k (:383-399); the centre updated with the
  global batch's mean teacher logits over both views (:401-412: an
  all_reduce of the sum over 2 n rows per GPU, divided by 2 n times the
  world size), after the loss as there (:400).
  """
  teacher = jax.lax.stop_gradient(teacher.astype(jnp.float32))
  student = student.astype(jnp.float32)
  num_views, n = student.shape[0], student.shape[1]
  if num_views < 2 or teacher.shape[0] != 2:
    raise ValueError(f"dino_loss needs 2 teacher views and >= 2 student "
                     f"views; got {teacher.shape[0]} and {num_views}")
  q = jax.nn.softmax((teacher - center) / teacher_temperature, axis=-1)
  log_p = jax.nn.log_softmax(student / student_temperature, axis=-1)
  # sum over v != iq of <q_iq, log p_v> = <q_iq, sum_v log p_v - log p_iq>:
  # one pass over the views instead of 2 (V - 1).
  total = jnp.sum(log_p, axis=0)
  ce = -jnp.sum(q * (total[None] - log_p[:2]), axis=-1)  # [2, n]
  num_terms = 2 * (num_views - 1)
  loss = (sum_over_devices(jnp.sum(ce), axis_name)
          / (global_count(n, axis_name) * num_terms))
  # The centre: the teacher's raw logits (before centring), both views.
  batch_center = (sum_over_devices(jnp.sum(teacher, axis=(0, 1)), axis_name)
                  / (2 * global_count(n, axis_name)))
  new_center = center * center_momentum + batch_center * (1 - center_momentum)
  return DINOLossOutput(loss=loss, center=jax.lax.stop_gradient(new_center),
                        batch_center=jax.lax.stop_gradient(batch_center))
