"""Which parameters get weight decay and LARS's trust ratio, by path: not
norms' parameters, biases, or a ViT's cls token and position embedding.

Our modules are named so this rule can read them (models/resnet.py,
models/heads.py, models/vit.py); optim.py applies it.
"""

import re
from typing import Any

import jax

# A module is BatchNorm if its name is flax's default (`BatchNorm_0`) or has a
# `bn` token: `bn`, `bn1`, `stem_bn`, `proj_bn`, `bn_out`. Not `bnet`.
_BN_MODULE = re.compile(r'batchnorm|(^|_)bn\d*(_|$)', re.IGNORECASE)
# A module is LayerNorm if its name is flax's default (`LayerNorm_0`), has
# `layer_norm` in it, or has an `ln` or `norm` token: `norm`, `norm1` (timm's
# names, models/vit.py), `ln1`, `final_norm`, `ln_f`. Not `normal`, `kiln`.
_LN_MODULE = re.compile(r'layer_?norm|(^|_)(ln|norm)\d*(_|$)', re.IGNORECASE)
# Leaves excluded by their own name, wherever they are: biases, and a ViT's
# cls token and (were it ever a parameter) position embedding, as timm's
# `no_weight_decay()` {'pos_embed', 'cls_token'} (models/vit.py).
_NO_DECAY_LEAVES = frozenset({'bias', 'cls_token', 'pos_embed'})


def _path_names(path) -> list[str]:
  """Key names along a pytree path (dict keys, attributes, or indices)."""
  names = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return names


def _gets_decay(path, _) -> bool:
  names = _path_names(path)  # empty for a bare array: decayed
  if names and names[-1] in _NO_DECAY_LEAVES:
    return False
  return not any(_BN_MODULE.search(m) or _LN_MODULE.search(m)
                 for m in names[:-1])


def decay_mask(params) -> Any:
  """True for the leaves that get weight decay and LARS trust-ratio scaling.

  Rule, by parameter path: a leaf is excluded (False) if its own name is
  `bias`, `cls_token` or `pos_embed`, or if any enclosing module is a norm:
  a BatchNorm, i.e. its name contains `BatchNorm` (flax's default naming) or
  a `bn` token (`bn1`, `stem_bn`, `proj_bn`, `bn_out`; our ResNets and heads
  name every BN this way), or a LayerNorm, i.e. its name contains
  `LayerNorm` / `layer_norm` or an `ln` or `norm` token (`norm`, `norm1`,
  `ln1`, `final_norm`; our ViTs name every LayerNorm this way). A token is
  delimited by `_` or the name's ends and may end in digits, so `bnet` and
  `normal` are not norms. Everything else, in particular every conv and
  dense `kernel`, is True. Other norms (e.g. flax's default `GroupNorm_0`)
  are NOT recognised and would get decay.

  Works on any params pytree, including `jax.eval_shape` outputs.
  """
  return jax.tree_util.tree_map_with_path(_gets_decay, params)


def decay_all(params) -> Any:
  """Every leaf True: decay on everything (torch's SGD over all parameters)."""
  return jax.tree.map(lambda _: True, params)
