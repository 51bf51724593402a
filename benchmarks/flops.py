"""Analytic FLOP counts of our ResNets and peak FLOP/s by device kind, for
MFU (model FLOPs utilisation), and a best-case bound on the MFU of a
training step whose BatchNorm runs as separate memory-bound passes."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from contrastive_jax import models
from contrastive_jax.models import resnet

# Training = forward + backward, the backward twice the forward (gradients
# w.r.t. the activations and w.r.t. the weights).
TRAIN_FACTOR = 3

# Dense (no sparsity) bfloat16 peak per device, FLOP/s, by a lowercase
# substring of `device.device_kind`; the first match wins, so the more
# specific names come first.
PEAK_BF16_FLOPS = (
    ("h100 pcie", 756e12),
    ("h100", 989e12),      # SXM (H100 80GB HBM3)
    ("h200", 989e12),
    ("gh200", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("a10g", 70e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("v100", 125e12),      # fp16 tensor cores (no bf16)
    ("tpu v6", 918e12),
    ("tpu v5p", 459e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v4", 275e12),
)


def device_peak_flops(device, override_tflops: float | None = None
                      ) -> float | None:
  """`override_tflops` (a command line's --peak_tflops) in FLOP/s, else the
  peak of `device`'s kind (None where unknown)."""
  if override_tflops:
    return override_tflops * 1e12
  return peak_bf16_flops(device.device_kind)


def peak_bf16_flops(device_kind: str) -> float | None:
  kind = device_kind.lower()
  for name, peak in PEAK_BF16_FLOPS:
    if name in kind:
      return peak
  return None


def _taps(size: int, k: int, stride: int, pad_lo: int | None) -> int:
  """Kernel taps over one spatial dimension summed over the outputs, only
  those that land inside the input (not on padding)."""
  out = -(-size // stride)
  if pad_lo is None:  # 'SAME', as flax pads
    pad_lo = max((out - 1) * stride + k - size, 0) // 2
  return sum(1 for o in range(out) for t in range(k)
             if 0 <= o * stride - pad_lo + t < size)


def _conv(size: int, k: int, stride: int, c_in: int, c_out: int, *,
          exact: bool, pad_lo: int | None = None) -> int:
  if exact:
    return _taps(size, k, stride, pad_lo) ** 2 * c_in * c_out
  out = -(-size // stride)
  return out * out * k * k * c_in * c_out


def encoder_forward_macs(name: str, *, image_size: int,
                         width_multiplier: int = 1, cifar_stem: bool = False,
                         exact: bool = False) -> int:
  """Multiply-accumulates of the encoder's convolutions for one image (the
  layers of models/resnet.py; BatchNorm, ReLU and pooling not counted).

  The usual convention (exact=False) counts every kernel tap of every
  output: ResNet-50 at 224 px is 4.09e9 (the "4.1 GMAC" of the literature,
  less the classifier's 2M that our encoder lacks). exact=True leaves out the
  taps that fall on the zero padding, as XLA's cost analysis does.
  """
  arch = models.ENCODERS[name].keywords
  stages, block = arch["stage_sizes"], arch["block_cls"]
  width = arch.get("num_filters", 64) * width_multiplier
  size = image_size
  conv = lambda *a, **k: _conv(*a, exact=exact, **k)
  if cifar_stem:
    macs = conv(size, 3, 1, 3, width)
  else:
    macs = conv(size, 7, 2, 3, width, pad_lo=3)
    size = -(-size // 4)  # stride-2 conv, stride-2 max-pool
  channels = width
  for i, num_blocks in enumerate(stages):
    filters = width * 2 ** i
    for j in range(num_blocks):
      stride = 2 if i > 0 and j == 0 else 1
      out_channels = filters * block.expansion
      if block is resnet.BottleneckBlock:
        macs += (conv(size, 1, 1, channels, filters)
                 + conv(size, 3, stride, filters, filters)
                 + conv(-(-size // stride), 1, 1, filters, out_channels))
      else:
        macs += (conv(size, 3, stride, channels, filters)
                 + conv(-(-size // stride), 3, 1, filters, out_channels))
      if channels != out_channels or stride != 1:
        macs += conv(size, 1, stride, channels, out_channels)
      size, channels = -(-size // stride), out_channels
  return macs


def mfu(flops_per_step: float, step_seconds: float, peak_flops: float) -> float:
  """Fraction of the peak that the step's FLOPs take at this step time."""
  return flops_per_step / step_seconds / peak_flops


def conv_output_elements(name: str, *, image_size: int,
                         width_multiplier: int = 1,
                         cifar_stem: bool = False) -> int:
  """Elements of every convolution's output for one image: each is the
  input of one BatchNorm (ResNet-50 at 224 px: 11,113,984 over 53
  convolutions). Shapes only (jax.eval_shape): nothing is computed."""
  encoder = models.create_encoder(name, width_multiplier=width_multiplier,
                                  cifar_stem=cifar_stem)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)

  def conv_outputs(x):
    variables = encoder.init(jax.random.PRNGKey(0), x, train=True)
    _, state = encoder.apply(
        variables, x, train=True, mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda module, _: isinstance(module, nn.Conv))
    return state["intermediates"]

  return sum(math.prod(leaf.shape)
             for leaf in jax.tree.leaves(jax.eval_shape(conv_outputs, x)))


# Memory accesses per conv-output element that a training-mode BatchNorm
# (+ its ReLU) needs when it runs as kernels of its own beside library
# convolutions, as XLA runs it beside cuDNN: forward, read y for the batch
# statistics, then read y again and write the normalised output; backward,
# read dy and y for the two reductions (sum dy, sum dy * x_hat), then read
# both again and write dx. None of these can move into a cuDNN call.
BN_TRAIN_ACCESSES = 8


@dataclasses.dataclass(frozen=True)
class StepBound:
  """Best-case time of one image's training step and the MFU it allows."""
  conv_seconds: float       # convolution FLOPs at the matrix-product rate
  bn_seconds: float         # BatchNorm's own traffic at the copy bandwidth
  images_per_second: float
  mfu: float                # against `peak_flops`


def training_step_bound(name: str = "resnet50", *, image_size: int = 224,
                        matmul_flops: float, copy_bytes_per_s: float,
                        peak_flops: float, bytes_per_element: int = 2,
                        width_multiplier: int = 1) -> StepBound:
  """A lower bound on the step time of an encoder whose convolutions are
  library calls and whose training BatchNorm runs in separate kernels.

  The convolutions cannot beat the device's large-matrix-product rate
  (`matmul_flops`, measured: convolutions with 64-256 channels run slower),
  and BatchNorm's passes (`BN_TRAIN_ACCESSES` per conv-output element, of
  `bytes_per_element`: 2 for bfloat16 activations) cannot beat the copy
  bandwidth. The two are different kernels, so the times add. Everything
  else (ReLU, residual adds, pooling, head, loss, optimizer) counts as
  free, which only raises the bound.
  """
  flops = TRAIN_FACTOR * 2 * encoder_forward_macs(
      name, image_size=image_size, width_multiplier=width_multiplier)
  elements = conv_output_elements(name, image_size=image_size,
                                  width_multiplier=width_multiplier)
  conv_s = flops / matmul_flops
  bn_s = BN_TRAIN_ACCESSES * bytes_per_element * elements / copy_bytes_per_s
  images_per_second = 1 / (conv_s + bn_s)
  return StepBound(conv_seconds=conv_s, bn_seconds=bn_s,
                   images_per_second=images_per_second,
                   mfu=mfu(flops, conv_s + bn_s, peak_flops))


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description="Best-case MFU of a training step whose BatchNorm runs as "
      "separate memory-bound passes (training_step_bound), from a device's "
      "ceilings; defaults: the H200 as measured on these machines.")
  parser.add_argument("--model", default="resnet50")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--matmul_tflops", type=float, default=788.0)
  parser.add_argument("--copy_tbps", type=float, default=4.3)
  parser.add_argument("--peak_tflops", type=float, default=989.0)
  args = parser.parse_args(argv)
  bound = training_step_bound(
      args.model, image_size=args.image_size,
      matmul_flops=args.matmul_tflops * 1e12,
      copy_bytes_per_s=args.copy_tbps * 1e12,
      peak_flops=args.peak_tflops * 1e12)
  print(f"{args.model} {args.image_size} px: "
        f"{bound.conv_seconds * 1e6:.1f} us convolutions + "
        f"{bound.bn_seconds * 1e6:.1f} us BatchNorm per image = "
        f"{bound.images_per_second:.0f} images/s at best, MFU "
        f"{100 * bound.mfu:.1f}% of {args.peak_tflops:.0f} TFLOP/s")
  return bound


if __name__ == "__main__":
  main()
