"""Where a ResNet-50 training step's time goes on one accelerator.

One process, one device, bfloat16 compute, synthetic device-resident batch;
the encoder of models/resnet.py plus a linear classifier, softmax cross
entropy, SGD with momentum (the supervised step of gpu_resnet50.py, without
the config machinery, so that parts can be taken out):

  bn_train      BatchNorm with batch statistics, as every method trains
  bn_fused      bn_train with models/fused_norm.py's BatchNorm (bn_impl
                'fused'): one reduction pass each way, its own VJP
  bn_fused_sib  bn_fused with each pass's two sums as sibling reductions
                (for XLA to multi-output fuse), not one variadic reduce
  bn_frozen     BatchNorm with running statistics: a per-channel affine
                that XLA fuses into the neighbouring elementwise kernels
  no_norm       no normalisation at all
  forward       bn_train's forward pass alone (no backward, no update)

and, in the same run, the device's ceilings: a large bf16 matrix product
(TFLOP/s) and a device-to-device copy (TB/s, bytes read + written); and
XLA's count of the bytes each variant's program moves (on GPU all but the
cuDNN convolutions', so bn_train - no_norm is BatchNorm's, to compare with
its minimum, and with the fused variants'), and the loss each training
variant reaches from the same start. From the ceilings it prints
`flops.training_step_bound`: the best case of a step whose training
BatchNorm runs as separate memory-bound passes (as XLA runs it beside cuDNN
convolutions), and the MFU that allows.

  python benchmarks/gpu_ablate.py                 # on a GPU
  python benchmarks/gpu_ablate.py --smoke         # CPU check: tiny ResNet

Imports neither TensorFlow, TFDS nor clu; benchmarks/harness.py needs
ml_collections, which `run_gpu.sh benchmarks/gpu_ablate.py` installs from
the carried wheel.
"""

import argparse
import contextlib
import os
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]
import flops as flops_lib  # noqa: E402  pylint: disable=g-import-not-at-top
import harness  # noqa: E402  pylint: disable=g-import-not-at-top

from contrastive_jax import models  # noqa: E402  pylint: disable=g-import-not-at-top
from contrastive_jax.models import fused_norm  # noqa: E402  pylint: disable=g-import-not-at-top
from contrastive_jax.models import resnet  # noqa: E402  pylint: disable=g-import-not-at-top

VARIANTS = ("bn_train", "bn_fused", "bn_fused_sib", "bn_frozen", "no_norm",
            "forward")
# Training-BN variants, and how their lines label them beside bn_train's.
FUSED = {"bn_fused": "fused", "bn_fused_sib": "fused, sibling sums"}
# By --smoke (a CPU check of the script) or not.
DEFAULTS = {
    False: dict(batch=256, steps=10, reps=3, model="resnet50",
                image_size=224),
    True: dict(batch=8, steps=1, reps=1, model="tiny_resnet", image_size=16),
}
NUM_CLASSES = 1000


class _NoNorm(nn.Module):
  """Stands in for BatchNorm (same call signature), returns its input."""
  scale_init: Any = None

  def __call__(self, x):
    return x


@contextlib.contextmanager
def _without_norm():
  """models/resnet.py builds its BatchNorms through `batch_norm(...)`."""
  original = resnet.batch_norm
  resnet.batch_norm = lambda **_: _NoNorm
  try:
    yield
  finally:
    resnet.batch_norm = original


@contextlib.contextmanager
def _sibling_sums():
  """models/fused_norm.py takes its two sums through `two_sums`."""
  original = fused_norm.two_sums
  fused_norm.two_sums = fused_norm.sibling_sums
  try:
    yield
  finally:
    fused_norm.two_sums = original


class Classifier(nn.Module):
  encoder: nn.Module

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.Dense(NUM_CLASSES, name="classifier")(self.encoder(x, train))


def build_variant(variant: str, *, model: str, image_size: int, batch: int,
                  cifar_stem: bool):
  """(step, state, XLA's bytes accessed per step) of one variant; the step
  donates its state."""
  encoder = models.create_encoder(
      model, cifar_stem=cifar_stem, dtype=jnp.bfloat16,
      bn_impl="fused" if variant in FUSED else "flax")
  net = Classifier(encoder)
  rng = np.random.default_rng(0)
  images = jnp.asarray(
      rng.random((batch, image_size, image_size, 3), dtype=np.float32))
  labels = jnp.asarray(rng.integers(0, NUM_CLASSES, batch, dtype=np.int32))
  # The model is traced (init, lower) with its BatchNorms taken out.
  tracing = {"no_norm": _without_norm, "bn_fused_sib": _sibling_sums}.get(
      variant, contextlib.nullcontext)
  with tracing():
    variables = net.init(jax.random.PRNGKey(0), images[:1], train=False)
  tx = optax.sgd(0.01, momentum=0.9)
  state = {"variables": variables, "opt": tx.init(variables["params"])}
  train_bn = variant in ("bn_train", "forward", *FUSED)

  def loss_fn(params, variables, images, labels):
    apply_vars = {**variables, "params": params}
    if train_bn:
      logits, updates = net.apply(apply_vars, images, train=True,
                                  mutable=["batch_stats"])
    else:
      logits, updates = net.apply(apply_vars, images, train=False), {}
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels).mean()
    return loss, updates

  def step(state, images, labels):
    variables = state["variables"]
    if variant == "forward":
      loss, updates = loss_fn(variables["params"], variables, images, labels)
      return {**state, "variables": {**variables, **updates}}, loss
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"], variables, images, labels)
    param_updates, opt = tx.update(grads, state["opt"], variables["params"])
    params = optax.apply_updates(variables["params"], param_updates)
    return {"variables": {**variables, **updates, "params": params},
            "opt": opt}, loss

  jitted = jax.jit(step, donate_argnums=0)
  with tracing():
    compiled = jitted.lower(state, images, labels).compile()
  return (lambda state: compiled(state, images, labels), state,
          harness.cost(compiled).get("bytes accessed"))


class Runner:
  """Calls a donating step on its own state; keeps the last loss."""

  def __init__(self, step, state):
    self.step, self.state, self.loss = step, state, None

  def __call__(self):
    self.state, self.loss = self.step(self.state)
    return self.loss


def ceilings(smoke: bool, timer: harness.Timer, reps: int):
  """Measured bf16 matrix-product FLOP/s and copy bytes/s of device 0."""
  n = 512 if smoke else 8192
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in keys)
  matmul = jax.jit(lambda a, b: a @ b)
  elements = 2 ** 20 if smoke else 2 ** 28       # 1 GiB of float32
  x = jnp.ones((elements,), jnp.float32)
  copy = jax.jit(lambda x: x * 1.0001)
  jax.block_until_ready((matmul(a, b), copy(x)))
  for _ in range(reps):
    timer.measure("matmul", lambda: matmul(a, b), calls=10)
    timer.measure("copy", lambda: copy(x), calls=10)
  return (2 * n ** 3 / timer.median("matmul"),
          2 * 4 * elements / timer.median("copy"))


def _beside(values: dict, fmt: str) -> str:
  """'; fused: 17.5; ...' for the fused variants among `values`."""
  return "".join(f"; {label}: {fmt.format(values[v])}"
                 for v, label in FUSED.items() if v in values)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=None,
                      help="images per step (default 256; smoke 8)")
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps per sample (default 10; smoke 1)")
  parser.add_argument("--reps", type=int, default=None,
                      help="interleaved samples (default 3; smoke 1)")
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                      choices=VARIANTS)
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="peak dense bf16 TFLOP/s (default: by device "
                      "kind)")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny ResNet, 16 px, CIFAR stem: checks the "
                      "script on CPU")
  args = parser.parse_args(argv)
  smoke = args.smoke
  # What the command line leaves unset comes from the mode's defaults.
  settings = {key: getattr(args, key, None) or default
              for key, default in DEFAULTS[smoke].items()}
  batch, steps, reps = settings["batch"], settings["steps"], settings["reps"]
  model, image_size = settings["model"], settings["image_size"]
  device = jax.devices()[0]
  peak = flops_lib.device_peak_flops(device, args.peak_tflops)
  print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}; "
        f"{model} {image_size} px bfloat16, batch {batch}; peak "
        f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown'}", flush=True)

  timer = harness.Timer()
  matmul_flops, copy_bytes = ceilings(smoke, timer, reps)
  print(f"ceilings: bf16 matrix product {matmul_flops / 1e12:.1f} TFLOP/s, "
        f"copy {copy_bytes / 1e12:.3f} TB/s", flush=True)

  runners, xla_bytes = {}, {}
  for variant in args.variants:
    step, state, xla_bytes[variant] = build_variant(
        variant, model=model, image_size=image_size, batch=batch,
        cifar_stem=smoke)
    runners[variant] = Runner(step, state)
    jax.block_until_ready(runners[variant]())  # warm-up
    print(f"  {variant}: compiled", flush=True)
  for _ in range(reps):
    for variant, runner in runners.items():
      timer.measure(variant, runner, calls=steps)

  forward_flops = 2 * flops_lib.encoder_forward_macs(
      model, image_size=image_size, cifar_stem=smoke) * batch
  rows = []
  for variant in runners:
    step_s = timer.median(variant)
    flops = forward_flops * (1 if variant == "forward"
                             else flops_lib.TRAIN_FACTOR)
    rows.append([
        variant, step_s * 1e3, f"{batch / step_s:.1f}",
        f"{flops / step_s / 1e12:.1f}",
        f"{100 * flops_lib.mfu(flops, step_s, peak):.1f}%" if peak else "n/a",
        (f"{xla_bytes[variant] / batch / 1e6:.1f}" if xla_bytes[variant]
         else "n/a"),
    ])
  print(harness.table(rows, ["variant", "step ms", "images/s",
                             "conv TFLOP/s", "MFU", "XLA MB/image"]))
  # Same init, batch and number of steps: the fused BatchNorm's training
  # should track flax's (bfloat16 rounding apart) on this device too.
  trained = [v for v in ("bn_train", *FUSED) if v in runners]
  if len(trained) > 1:
    print(f"loss after {1 + reps * steps} steps: " + "; ".join(
        f"{v} {float(runners[v].loss):.4f}" for v in trained))
  # On GPU XLA's byte count leaves out the cuDNN convolutions, so the
  # difference is what the BatchNorm kernels move; compare with the
  # minimum flops_lib.BN_TRAIN_ACCESSES * 2 bytes per element.
  if xla_bytes.get("bn_train") and xla_bytes.get("no_norm"):
    elements = flops_lib.conv_output_elements(
        model, image_size=image_size, cifar_stem=smoke) * batch
    per_element = {v: (xla_bytes[v] - xla_bytes["no_norm"]) / elements
                   for v in ("bn_train", *FUSED) if xla_bytes.get(v)}
    print(f"training BatchNorm's bytes per conv-output element (XLA's "
          f"count): {per_element['bn_train']:.1f} (minimum "
          f"{2 * flops_lib.BN_TRAIN_ACCESSES})"
          + _beside(per_element, "{:.1f}"))
  if "bn_train" in runners and "no_norm" in runners:
    without = timer.median("no_norm")
    share = {v: 100 * (1 - without / timer.median(v))
             for v in ("bn_train", *FUSED) if v in runners}
    print(f"training BatchNorm's share of the step: "
          f"{share['bn_train']:.1f}%" + _beside(share, "{:.1f}%"))
  if peak and not smoke:
    bound = flops_lib.training_step_bound(
        model, image_size=image_size, matmul_flops=matmul_flops,
        copy_bytes_per_s=copy_bytes, peak_flops=peak)
    print(f"best case with separate BatchNorm passes (measured ceilings): "
          f"{bound.conv_seconds * 1e6:.1f} us convolutions + "
          f"{bound.bn_seconds * 1e6:.1f} us BatchNorm per image = "
          f"{bound.images_per_second:.0f} images/s, MFU "
          f"{100 * bound.mfu:.1f}%")
  return rows


if __name__ == "__main__":
  main()
