"""What the Barlow Twins and VICReg configs share: their references' views
and projectors (the two references are the same code base's: their
`Transform` and projector loops are line for line alike)."""

import ml_collections


def views(image_size: int, *, crop_area=(0.08, 1.0), blur=(1.0, 0.1),
          solarize=(0.0, 0.2)) -> tuple[str, str]:
  """The two views of facebookresearch/barlowtwins main.py:290-326
  @8e8d284 (= facebookresearch/vicreg augmentations.py:37-89 @4e12602),
  in their order: torchvision's RandomResizedCrop (10 attempts, PIL's
  bicubic resize, antialiased), flip 0.5, torchvision's ColorJitter
  0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2, blur (sigma 0.1-2) with
  p = blur[v], solarize (PIL's threshold 128) with p = solarize[v]. Ops
  with p = 0 are left out."""
  crop = (f"random_resized_crop({image_size}, area={tuple(crop_area)}, "
          "impl='torchvision', max_attempts=10, method='bicubic', "
          "antialias=True)")
  out = []
  for blur_p, solarize_p in zip(blur, solarize):
    ops = [crop, "flip_lr(p=0.5)",
           "color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, "
           "saturation=0.2, hue=0.1, impl='torchvision')",
           "grayscale(p=0.2)"]
    if blur_p:
      ops.append(f"gaussian_blur(p={blur_p}, sigma=(0.1, 2.0), "
                 "kernel_fraction=0.1)")
    if solarize_p:
      ops.append(f"solarize(p={solarize_p}, threshold=0.5)")
    out.append("|".join(ops))
  return out[0], out[1]


def projector(*, hidden_dim: int, output_dim: int, hidden_bias: bool,
              output_bias: bool = False) -> ml_collections.ConfigDict:
  """Linear -> BN -> ReLU twice, then a Linear with no BN or ReLU after it
  (barlowtwins main.py:195-202, vicreg main_vicreg.py:223-232), with
  PyTorch's default nn.Linear init."""
  return ml_collections.ConfigDict(dict(
      num_layers=3, hidden_dim=hidden_dim, output_dim=output_dim,
      use_bn=True, output_bn=False, output_bn_scale=True,
      hidden_bias=hidden_bias, output_bias=output_bias,
      dense_init="torch_linear", kernel_init_stddev=-1.0))
