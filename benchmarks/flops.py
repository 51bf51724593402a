"""Analytic FLOP counts of our ResNets and peak FLOP/s by device kind, for
MFU (model FLOPs utilisation)."""

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
