"""View specs of the method families' references, as op spec strings
(data/view_spec.py): SimCLR's and MoCo's crops and augmentations, and the
one augmentation every `:small` recipe shares. The configs compose these
into `view_augment`; `defaults` re-exports them for the configs that import
them from there."""


def simclr_crop(image_size: int, crop_area=(0.08, 1.0)) -> str:
  """SimCLR's random crop as an op spec: the reference's TF sampler with its
  arguments (v1 and v2 data_util.py crop_and_resize: min_object_covered
  0.1, aspect 3/4-4/3, 100 attempts, bicubic resize). Pretraining and the
  linear-eval / finetuning training view use the same crop."""
  return (f"random_resized_crop({image_size}, area={tuple(crop_area)}, "
          "min_object_covered=0.1, max_attempts=100)")


def moco_crop(image_size: int, crop_area=(0.08, 1.0)) -> str:
  """torchvision's RandomResizedCrop as MoCo runs it, as an op spec: area
  uniform, log-uniform aspect 3/4-4/3, 10 attempts, then PIL's bilinear
  resize, which is antialiased. `crop_area` defaults to torchvision's
  scale=(0.08, 1.0) (MoCo's linear eval); pretraining passes (0.2, 1.0)."""
  return (f"random_resized_crop({image_size}, area={tuple(crop_area)}, "
          "impl='torchvision', method='bilinear', antialias=True)")


def simclr_views(image_size: int, *, jitter_strength: float, blur: bool,
                 crop_area=(0.08, 1.0), version: int = 1,
                 flip: bool = True) -> str:
  """SimCLR's augmentation (paper appendix A) as an op spec string.

  The crop is `simclr_crop`. The colour jitter is v1's (additive
  brightness) or v2's (multiplicative), with TF's contrast and saturation
  either way. `flip=False` leaves out the flip (the digits demo: a digit's
  orientation is part of what it is).
  """
  if version not in (1, 2):
    raise ValueError(f"SimCLR version must be 1 or 2; got {version!r}")
  ops = [
      simclr_crop(image_size, crop_area),
      *(["flip_lr(p=0.5)"] if flip else []),
      f"color_jitter({jitter_strength}, p=0.8, impl='simclr_v{version}')",
      "grayscale(p=0.2)",
  ]
  if blur:
    # A 'SAME' depthwise convolution, zero-padded (simclr HEAD
    # data_util.py:328, :411-413; be133b3 :298, :382). The reference draws
    # one sigma per view of each per-core batch (batch_random_blur,
    # :417-443, calls random_blur on the whole batch, model.py:56), the
    # coin per image; ours draws sigma per image too.
    ops.append("gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1, "
               "padding='zeros')")
  return "|".join(ops)


def moco_views(image_size: int, *, version: int, blur: bool | None = None,
               crop_area=(0.2, 1.0)) -> str:
  """MoCo's augmentation as an op spec string, in the reference's order.

  v1 (MoCo paper): crop, grayscale 0.2, colour jitter 0.4/0.4/0.4/0.4 always,
  flip. v2 (MoCo v2 note, "aug+"): crop, jitter 0.4/0.4/0.4/0.1 with p=0.8,
  grayscale 0.2, blur sigma 0.1-2 with p=0.5, flip. `blur` defaults to v2's.
  The crop (`moco_crop`) and the jitter are torchvision's (RandomResizedCrop,
  ColorJitter).
  """
  if version not in (1, 2):
    raise ValueError(f"MoCo version must be 1 or 2; got {version!r}")
  if blur is None:
    blur = version == 2
  crop = moco_crop(image_size, crop_area)
  if version == 1:
    ops = [crop, "grayscale(p=0.2)",
           "color_jitter(1.0, p=1.0, brightness=0.4, contrast=0.4, "
           "saturation=0.4, hue=0.4, impl='torchvision')"]
  else:
    ops = [crop,
           "color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
           "saturation=0.4, hue=0.1, impl='torchvision')",
           "grayscale(p=0.2)"]
  if blur:
    ops.append("gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1)")
  ops.append("flip_lr(p=0.5)")
  return "|".join(ops)


def small_views(image_size: int = 32, crop_area=(0.4, 1.0)) -> str:
  """The one augmentation every `:small` recipe uses, chosen by measurement
  (BENCHMARKS.md "Small data"): SimCLR's crop at 40-100% of the area,
  SimCLR's colour jitter 0.5 with p=0.8 and grayscale 0.2, and no flip and
  no blur. On grey images only brightness and contrast act; a flip cost the
  digits 5 points of linear top-1 (orientation is part of what a digit
  is), and a blur is the identity at this size."""
  return "|".join([
      simclr_crop(image_size, crop_area),
      "color_jitter(0.5, p=0.8, impl='simclr_v1')",
      "grayscale(p=0.2)"])
