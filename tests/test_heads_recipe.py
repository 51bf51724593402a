"""SimCLR as the official code has it: the projection head's structure and
the scale of the optimised objective.

References: google-research/simclr at its first commit (v1,
`model_util.projection_head`, `objective.add_contrastive_loss`) and at HEAD
(v2, `tf2/model.py` `ProjectionHead`, `tf2/objective.py`).
"""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive_jax import losses, step_context, weight_decay
from contrastive_jax.config import lib as config_lib
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import encoder_with_head
from contrastive_jax.methods import simclr
from contrastive_jax.models import ProjectionHead

KEY = jax.random.key(0)
EPS = 1e-5  # resnet.BATCH_NORM_EPSILON in the reference


def load_config(variant):
  return config_lib.module("simclr").get_config(variant)


def shapes(tree):
  return jax.tree.map(lambda x: tuple(x.shape), tree)


def _init(head, dim=16, batch=6):
  h = jax.random.normal(jax.random.key(3), (batch, dim))
  return h, head.init(KEY, h, train=False)


# ------------------------------------------------------------------ heads --

def test_v1_head_tree():
  # model_util.projection_head, num_nlh_layers=1: nl_0 = Dense(width, no
  # bias) + BN(centre, scale); ReLU; nl_1 = Dense(128, no bias) + BN(scale).
  head = ProjectionHead(num_layers=2, output_dim=8, use_bn=True)
  _, variables = _init(head)
  assert shapes(variables["params"]) == {
      "dense1": {"kernel": (16, 16)},
      "bn1": {"scale": (16,), "bias": (16,)},
      "dense2": {"kernel": (16, 8)},
      "bn_out": {"scale": (8,)},   # center=False on the last BN
  }
  assert shapes(variables["batch_stats"]) == {
      "bn1": {"mean": (16,), "var": (16,)},
      "bn_out": {"mean": (8,), "var": (8,)}}


def test_v2_head_tree():
  # tf2/model.py ProjectionHead, num_proj_layers=3: two hidden
  # Dense(input width) + BN + ReLU, then Dense(128) + BN without centre.
  head = ProjectionHead(num_layers=3, output_dim=8, use_bn=True)
  _, variables = _init(head)
  assert shapes(variables["params"]) == {
      "dense1": {"kernel": (16, 16)},
      "bn1": {"scale": (16,), "bias": (16,)},
      "dense2": {"kernel": (16, 16)},
      "bn2": {"scale": (16,), "bias": (16,)},
      "dense3": {"kernel": (16, 8)},
      "bn_out": {"scale": (8,)},
  }


def _np_bn(x, scale, bias):
  mean = x.mean(axis=0)
  var = ((x - mean) ** 2).mean(axis=0)
  return (x - mean) / np.sqrt(var + EPS) * scale + bias


@pytest.mark.parametrize("num_layers", [2, 3])
def test_bn_head_forward_matches_numpy(num_layers):
  # Dense -> BN -> ReLU per hidden layer, Dense -> BN(no centre) last, in
  # float64 NumPy with non-trivial BN scales and centres: pins the BN
  # placement (ReLU after the BN) and the missing centre.
  head = ProjectionHead(num_layers=num_layers, output_dim=8, use_bn=True)
  h, variables = _init(head)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32),
      variables["params"])
  z, _ = head.apply({"params": params,
                     "batch_stats": variables["batch_stats"]},
                    h, train=True, mutable=["batch_stats"])
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  x = np.asarray(h, np.float64)
  for i in range(1, num_layers):
    x = x @ p[f"dense{i}"]["kernel"]
    x = np.maximum(_np_bn(x, p[f"bn{i}"]["scale"], p[f"bn{i}"]["bias"]), 0)
  x = _np_bn(x @ p[f"dense{num_layers}"]["kernel"], p["bn_out"]["scale"], 0.0)
  np.testing.assert_allclose(np.asarray(z), x, rtol=2e-4, atol=2e-4)


def test_reference_kernel_init():
  # Both references draw Dense kernels from N(0, 0.01^2)
  # (model_util.linear_layer, tf2/model.py LinearLayer).
  head = ProjectionHead(num_layers=2, output_dim=64, use_bn=True,
                        kernel_init_stddev=0.01)
  _, variables = _init(head, dim=256)
  for name in ("dense1", "dense2"):
    kernel = np.asarray(variables["params"][name]["kernel"])
    assert abs(kernel.mean()) < 1e-3
    assert abs(kernel.std() - 0.01) < 5e-4, (name, kernel.std())


def test_output_bias_option():
  h, plain = _init(ProjectionHead(num_layers=1, output_dim=8))
  assert shapes(plain["params"]) == {"dense1": {"kernel": (16, 8)}}
  head = ProjectionHead(num_layers=2, output_dim=8, output_bias=True)
  h, variables = _init(head)
  # MoCo v2's torchvision head: Linear(+bias) -> ReLU -> fc(+bias).
  assert shapes(variables["params"]) == {
      "dense1": {"kernel": (16, 16), "bias": (16,)},
      "dense2": {"kernel": (16, 8), "bias": (8,)}}
  p = variables["params"]
  p = jax.tree.map(lambda x: x + 0.5, p)  # a non-zero output bias
  want = (np.maximum(np.asarray(h) @ p["dense1"]["kernel"]
                     + p["dense1"]["bias"], 0)
          @ p["dense2"]["kernel"] + p["dense2"]["bias"])
  np.testing.assert_allclose(head.apply({"params": p}, h, train=True), want,
                             rtol=1e-5, atol=1e-5)


def test_output_bias_with_bn_is_rejected():
  with pytest.raises(ConfigError, match="output_bias"):
    _init(ProjectionHead(use_bn=True, output_bias=True))


@pytest.mark.parametrize("variant,features,width,layers", [
    ("cifar10", 512, 512, 3), ("cifar10_v1", 512, 512, 2),
    ("imagenet", 2048, 2048, 2), ("imagenet1000", 2048, 2048, 2),
    ("imagenet_v2", 2048, 2048, 3), ("digits", 32, 64, 2)])
def test_config_builds_the_reference_head(variant, features, width, layers):
  c = load_config(variant)
  c.image_size = 32   # shapes only: the head does not depend on it
  model = encoder_with_head.create(c, bn_axis_name=None)
  variables = jax.eval_shape(
      lambda: model.init(KEY, jnp.zeros((2, 32, 32, 3)), train=False))
  head = shapes(variables["params"]["head"])
  out = c.head.output_dim
  want = {}
  for i in range(1, layers):
    want[f"dense{i}"] = {"kernel": (features if i == 1 else width, width)}
    want[f"bn{i}"] = {"scale": (width,), "bias": (width,)}
  want[f"dense{layers}"] = {"kernel": (width, out)}
  want["bn_out"] = {"scale": (out,)}
  assert head == want
  # LARS: decay and trust ratio on the Dense kernels only, none on the BNs
  # (the reference excludes 'batch_normalization' and 'bias').
  mask = weight_decay.decay_mask(variables["params"]["head"])
  assert all(mask[f"dense{i}"]["kernel"] for i in range(1, layers + 1))
  assert not any(jax.tree.leaves(
      {k: v for k, v in mask.items() if k.startswith("bn")}))


# -------------------------------------------------------------- loss scale --

LARGE_NUM = 1e9


def reference_objective(z_a, z_b, temperature):
  """objective.add_contrastive_loss (first commit; tf2 alike) in float64
  NumPy: loss_a + loss_b, each a softmax cross-entropy averaged over the N
  anchors of one view, self-similarity masked with -LARGE_NUM."""
  def normalize(z):
    z = np.asarray(z, np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)

  h1, h2 = normalize(z_a), normalize(z_b)
  n = h1.shape[0]
  masks = np.eye(n)
  logits_aa = h1 @ h1.T / temperature - masks * LARGE_NUM
  logits_bb = h2 @ h2.T / temperature - masks * LARGE_NUM
  logits_ab = h1 @ h2.T / temperature
  logits_ba = h2 @ h1.T / temperature

  def cross_entropy(logits):  # labels: column i of the first block
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    return np.mean(lse - logits[np.arange(n), np.arange(n)])

  return (cross_entropy(np.concatenate([logits_ab, logits_aa], 1))
          + cross_entropy(np.concatenate([logits_ba, logits_bb], 1)))


def _fd_grad(f, z_a, z_b, eps=1e-6):
  grads = []
  for which in range(2):
    args = [np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)]
    g = np.zeros_like(args[which])
    for idx in np.ndindex(*g.shape):
      plus = [a.copy() for a in args]
      minus = [a.copy() for a in args]
      plus[which][idx] += eps
      minus[which][idx] -= eps
      g[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    grads.append(g)
  return grads


def _batch(n=6, d=4, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, d)), jnp.float32),
          jnp.asarray(rng.normal(size=(n, d)), jnp.float32))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_objective_is_the_reference_sum(temperature):
  z_a, z_b = _batch()
  objective, out = simclr.contrastive_objective(
      z_a, z_b, temperature=temperature, axis_name=None)
  mean = losses.nt_xent(z_a, z_b, temperature=temperature)
  np.testing.assert_allclose(float(out.loss), float(mean), rtol=1e-6)
  np.testing.assert_allclose(float(objective), 2 * float(mean), rtol=1e-6)
  np.testing.assert_allclose(float(objective),
                             reference_objective(z_a, z_b, temperature),
                             rtol=1e-5)


def test_objective_gradient_is_the_reference_gradient():
  z_a, z_b = _batch(n=4, d=3, seed=1)
  tau = 0.5
  got = jax.grad(lambda a, b: simclr.contrastive_objective(
      a, b, temperature=tau, axis_name=None)[0], argnums=(0, 1))(z_a, z_b)
  mean_grad = jax.grad(lambda a, b: losses.nt_xent(a, b, temperature=tau),
                       argnums=(0, 1))(z_a, z_b)
  want = _fd_grad(lambda a, b: reference_objective(a, b, tau), z_a, z_b)
  for g, m, w in zip(got, mean_grad, want):
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(m), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-6)


class _FlatEncoder(nn.Module):
  """A stand-in encoder (flatten + Dense): the step's arithmetic does not
  depend on the ResNet, and this compiles in well under a second."""

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    return nn.Dense(16)(x.reshape((x.shape[0], -1)))


def _step_metrics(monkeypatch, scale):
  """One unsharded SimCLR step (plain SGD, lr 1, no decay, no probe; the
  reference v1 head) with REFERENCE_LOSS_SCALE set to `scale`."""
  monkeypatch.setattr(simclr, "REFERENCE_LOSS_SCALE", scale)
  c = load_config("digits")
  c.image_size = 4
  model = encoder_with_head.EncoderWithHead(
      encoder=_FlatEncoder(),
      head=ProjectionHead(num_layers=2, output_dim=8, use_bn=True))
  tx = optax.sgd(1.0)
  state = simclr.init_state(jax.random.PRNGKey(0), model=model, tx=tx,
                            config=c)
  rng = np.random.default_rng(0)
  views = rng.uniform(size=(2, 8, 4, 4, 3)).astype(np.float32)
  batch = {"view1": views[0], "view2": views[1],
           "label": np.zeros((8,), np.int32)}
  step = jax.jit(lambda s, b: simclr.train_step(
      s, b, model=model, tx=tx, config=c, context=step_context.constant_context(1.0),
      axis_name=None))
  new_state, metrics = step(state, batch)
  delta = jax.tree.map(lambda a, b: a - b, new_state.params, state.params)
  return jax.device_get(metrics), jax.device_get(delta)


def test_train_step_optimises_and_logs_both_scales(monkeypatch):
  ref, ref_delta = _step_metrics(monkeypatch, 2.0)
  half, half_delta = _step_metrics(monkeypatch, 1.0)
  # `loss` is what is optimised (the guard reads it), `nt_xent` the paper's.
  np.testing.assert_allclose(ref["loss"], 2 * ref["nt_xent"], rtol=1e-6)
  np.testing.assert_allclose(ref["nt_xent"], half["nt_xent"], rtol=1e-6)
  np.testing.assert_allclose(ref["grad_norm"], 2 * half["grad_norm"],
                             rtol=1e-4)
  for a, b in zip(jax.tree.leaves(ref_delta), jax.tree.leaves(half_delta)):
    np.testing.assert_allclose(a, 2 * b, rtol=1e-3, atol=1e-7)
