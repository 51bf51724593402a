"""Our ViT encoder in timm's `VisionTransformer` names and layouts (pure
NumPy): what `export --format=timm` writes, for
`timm.create_model(name, num_classes=0, **kwargs).load_state_dict(...,
strict=True)`.

Our ViT follows timm's blocks and names one to one (models/vit.py), so the
map is a renaming plus torch's layouts:
  patch_embed            -> patch_embed.proj.{weight [D, 3, p, p], bias}
  cls_token [1, 1, D]    -> cls_token
  pos_embed [1, 1+G*G, D] (DINO's learned table, `vit_position_embedding=
  'learned'`) or the fixed sin-cos table (not a parameter here)
                         -> pos_embed [1, 1+N, D], the cls position first,
                            for the N patches of `image_size` (a learned
                            table made for another size is resized as
                            the encoder resizes it, models/positions.py)
  block{i}/norm1         -> blocks.{i-1}.norm1.{weight, bias}
  block{i}/attn/qkv      -> blocks.{i-1}.attn.qkv.{weight [3D, D], bias}
                            (the fused output's [3, heads, head_dim] order
                            is timm's own)
  block{i}/attn/proj, norm2, mlp/fc1, mlp/fc2 -> likewise
  norm                   -> norm.{weight, bias}
With `num_classes=0` timm's head, `fc_norm` (global_pool='token') and
LayerScale are identities without parameters, so these are all its keys.
The features are timm's `forward_features` cls token after `norm` (its
`forward_head(pre_logits=True)`), which is our h.
"""

import numpy as np

from contrastive_jax.models import positions, vit

# timm's registered ViTs at 224 px and patch 16: name -> (width, depth,
# heads) (timm vision_transformer.py `vit_tiny_patch16_224`, ...).
TIMM_VITS = {"vit_tiny_patch16_224": (192, 12, 3),
             "vit_small_patch16_224": (384, 12, 6),
             "vit_base_patch16_224": (768, 12, 12)}


def is_vit(variables) -> bool:
  params = variables["params"]
  return "cls_token" in params and "patch_embed" in params


def shape_of(variables) -> tuple[int, int, int]:
  """(width, depth, patch size) of a ViT's parameters."""
  params = variables["params"]
  kernel = np.asarray(params["patch_embed"]["kernel"])
  depth = sum(1 for name in params if name.startswith("block"))
  return kernel.shape[-1], depth, kernel.shape[0]


def state_dict(variables, *, image_size: int) -> dict[str, np.ndarray]:
  """timm's state dict of our ViT's variables trained at `image_size`."""
  params = variables["params"]
  width, depth, patch = shape_of(variables)
  grid = image_size // patch
  if "pos_embed" in params:
    pos_embed = positions.position_table(np.asarray(params["pos_embed"]),
                                         grid, grid)
  else:
    pos_embed = vit.sincos_position_embedding(grid, grid, width)[None]
  out = {
      "cls_token": np.asarray(params["cls_token"]),
      "pos_embed": pos_embed,
      # HWIO -> OIHW.
      "patch_embed.proj.weight": np.transpose(
          params["patch_embed"]["kernel"], (3, 2, 0, 1)),
      "patch_embed.proj.bias": np.asarray(params["patch_embed"]["bias"]),
      "norm.weight": np.asarray(params["norm"]["scale"]),
      "norm.bias": np.asarray(params["norm"]["bias"]),
  }
  for i in range(1, depth + 1):
    block, name = params[f"block{i}"], f"blocks.{i - 1}"
    for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2")):
      out[f"{name}.{theirs}.weight"] = np.asarray(block[ours]["scale"])
      out[f"{name}.{theirs}.bias"] = np.asarray(block[ours]["bias"])
    for ours, theirs in ((("attn", "qkv"), "attn.qkv"),
                         (("attn", "proj"), "attn.proj"),
                         (("mlp", "fc1"), "mlp.fc1"),
                         (("mlp", "fc2"), "mlp.fc2")):
      dense = block[ours[0]][ours[1]]
      # flax's [in, out] kernel is torch's Linear weight transposed.
      out[f"{name}.{theirs}.weight"] = np.asarray(dense["kernel"]).T
      out[f"{name}.{theirs}.bias"] = np.asarray(dense["bias"])
  return out


def create_call(*, width: int, depth: int, num_heads: int, patch_size: int,
                image_size: int) -> str:
  """The `timm.create_model(...)` call that builds this encoder: the
  registered name of the same width, with keyword arguments for whatever
  differs from it (MoCo v3's ViT-S has 12 heads where timm's has 6: the
  weights load either way, the features only with `num_heads=12`)."""
  name = next((n for n, (w, _, _) in TIMM_VITS.items() if w == width),
              "vit_small_patch16_224")
  w, d, h = TIMM_VITS[name]
  kwargs = {"num_classes": 0}
  for key, want, default in (("img_size", image_size, 224),
                             ("patch_size", patch_size, 16),
                             ("embed_dim", width, w), ("depth", depth, d),
                             ("num_heads", num_heads, h)):
    if want != default:
      kwargs[key] = want
  args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
  return f"timm.create_model({name!r}, {args})"
