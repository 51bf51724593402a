"""Taking a pretrained encoder out of JAX.

  python -m contrastive_jax.export --checkpoint=WORKDIR_OR_STEP_DIR \
      --format=torchvision --out=encoder.safetensors [--include_head]

torchvision: safetensors with torchvision's ResNet names and layouts (OIHW
  kernels, BatchNorm running stats): `torchvision.models.resnet50()
  .load_state_dict(sd, strict=False)` misses only fc.*. npz: the Flax tree,
  keys '/'-joined. saved_model: a TF SavedModel (jax2tf) of the encoder in
  eval mode, float32 NHWC [B, S, S, 3] -> features [B, d]. onnx: the same
  computation as an ONNX model (jax2onnx, `pip install -e '.[onnx]'`),
  checked against JAX in onnxruntime before it is written.
The encoder takes images as the pipeline feeds it: RGB in [0, 1]. A config
with `input_norm` (MoCo: ImageNet or CIFAR-10 mean/std) normalises inside the
JAX encoder, so the SavedModel and the ONNX model do it themselves, while
torchvision/npz weights need `(x - mean) / std` first; the metadata says
which, with the architecture and step. `--include_head` adds the online (MoCo:
query) projection head under `head.` ('head/' in npz).
"""

import json
import os
import re

# Before TensorFlow loads: keep its C++ start-up chatter out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from flax import traverse_util  # noqa: E402

from contrastive_jax import atomic_files  # noqa: E402
from contrastive_jax import cli  # noqa: E402
from contrastive_jax import checkpointing  # noqa: E402
from contrastive_jax import graph_export  # noqa: E402
from contrastive_jax import timm_layout  # noqa: E402
from contrastive_jax import pretrained  # noqa: E402
from contrastive_jax.errors import (CheckpointError, ConfigError,  # noqa: E402
                                    UserError)
from contrastive_jax.methods import encoder_with_head  # noqa: E402
from contrastive_jax.models import input_norm  # noqa: E402
from contrastive_jax.models import resnet  # noqa: E402
from contrastive_jax.config import lib as config_lib  # noqa: E402

FORMATS = ("torchvision", "timm", "npz", "saved_model", "onnx")
# Formats that hold the encoder's computation (graph_export.py).
GRAPH_FORMATS = ("saved_model", "onnx")
TORCH_BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default
HEAD_PREFIX = "head."
INPUT_CONVENTION = ("float32 RGB in [0, 1], NCHW for torch (NHWC for JAX, "
                    "the SavedModel and ONNX); no mean/std normalisation")
# What torchvision's constructors build (at width_multiplier=1).
TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101",
                      "resnet152")

_STEM = {"stem_conv": "conv1", "stem_bn": "bn1"}
_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")
# Module of a residual block -> its torchvision attribute.
_BLOCK_PARTS = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3",
                "bn1": "bn1", "bn2": "bn2", "bn3": "bn3",
                "proj_conv": "downsample.0", "proj_bn": "downsample.1"}


class ExportError(UserError):
  """An export flag (--format, --out) we cannot use."""


# --- Flax trees -> torch names (pure) --------------------------------------

def _batch_norm(prefix, params, stats, num_batches_tracked):
  """torch BatchNorm{1,2}d entries; a Flax BN without scale or bias (the
  head's `bn_out`) is torch's with weight 1 or bias 0."""
  mean = stats["mean"]
  return {f"{prefix}.weight": params.get("scale", np.ones_like(mean)),
          f"{prefix}.bias": params.get("bias", np.zeros_like(mean)),
          f"{prefix}.running_mean": mean,
          f"{prefix}.running_var": stats["var"],
          f"{prefix}.num_batches_tracked": np.asarray(num_batches_tracked,
                                                      np.int64)}


def _conv_or_bn(prefix, params, stats, num_batches_tracked):
  if "kernel" in params:
    # HWIO -> OIHW, as a view: the writer makes it contiguous.
    return {f"{prefix}.weight": np.transpose(params["kernel"], (3, 2, 0, 1))}
  return _batch_norm(prefix, params, stats, num_batches_tracked)


def check_resnet(config, variables):
  """CheckpointError unless the encoder is one of our ResNets, by the
  config's model and by the parameter names (a ViT fails both)."""
  try:
    is_resnet = isinstance(pretrained.encoder_module(config), resnet.ResNet)
  except ConfigError:  # A model this version does not know.
    is_resnet = False
  params = variables["params"]
  if not (is_resnet and "stem_conv" in params and all(
      name in _STEM or (_BLOCK.match(name) and set(m) <= set(_BLOCK_PARTS))
      for name, m in params.items())):
    raise CheckpointError(
        "export --format=torchvision supports ResNet encoders; this "
        f"checkpoint's model is {config.get('model')!r}")


def torchvision_state_dict(variables, *, num_batches_tracked=0) -> dict:
  """A ResNet's {'params', 'batch_stats'} (see `check_resnet`) as
  torchvision's state_dict without fc.*: stem_* -> conv1/bn1,
  stage{i}_block{j} -> layer{i}.{j-1}, proj_* -> downsample.{0,1}."""
  params, stats = variables["params"], variables["batch_stats"]
  out = {}
  for name, module in params.items():
    if name in _STEM:
      out.update(_conv_or_bn(_STEM[name], module, stats.get(name),
                             num_batches_tracked))
      continue
    stage, block = map(int, _BLOCK.match(name).groups())
    for part, leaves in module.items():
      out.update(_conv_or_bn(
          f"layer{stage}.{block - 1}.{_BLOCK_PARTS[part]}", leaves,
          stats[name].get(part), num_batches_tracked))
  return out


def head_state_dict(variables, *, num_batches_tracked=0) -> dict:
  """The projection head under HEAD_PREFIX, Flax's module names kept
  (dense1, bn1, ..., bn_out): torch Linear [out, in] weights and
  BatchNorm1d entries."""
  params, stats = variables["params"], variables.get("batch_stats", {})
  out = {}
  for name, module in params.items():
    prefix = f"{HEAD_PREFIX}{name}"
    if "kernel" not in module:
      out.update(_batch_norm(prefix, module, stats[name],
                             num_batches_tracked))
      continue
    out[f"{prefix}.weight"] = np.transpose(module["kernel"])
    if "bias" in module:
      out[f"{prefix}.bias"] = module["bias"]
  return out


def flat_tree(variables, prefix="") -> dict:
  """{'params/stem_conv/kernel': array, ...}: the npz layout."""
  return {prefix + "/".join(path): np.asarray(leaf) for path, leaf in
          traverse_util.flatten_dict(variables).items()}


# --- Reading the checkpoint ------------------------------------------------

def head_variables(loaded: pretrained.Pretrained) -> dict:
  """The online network's projection head, read from the checkpoint again
  (`pretrained.load` keeps only the encoder). Both methods train an
  `EncoderWithHead`, so it is params['head']: MoCo's query head (the key
  head is an EMA in the optimizer state)."""
  ckpt = checkpointing.Checkpointer(os.path.dirname(loaded.directory),
                                    save_every_steps=1, keep=1,
                                    read_only=True)
  tree = ckpt.state_metadata(loaded.step)
  if "head" not in tree.get("params", {}):
    raise CheckpointError(f"checkpoint {loaded.directory}/{loaded.step} has "
                          "no projection head to export (--include_head)")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  state = ckpt.restore(jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      tree), step=loaded.step)
  return jax.tree.map(np.asarray, {
      "params": state["params"]["head"],
      "batch_stats": state.get("batch_stats", {}).get("head", {})})


def input_metadata(config, fmt: str) -> dict:
  """'input' (what to feed) and the mean/std the encoder was trained with."""
  norm = config_lib.value(config, "input_norm")
  mean_std = input_norm.INPUT_NORMS[norm]
  if mean_std is None:
    return {"input": INPUT_CONVENTION, "input_norm": "none"}
  mean, std = mean_std
  if fmt in GRAPH_FORMATS:
    graph = "ONNX model" if fmt == "onnx" else "SavedModel"
    how = f"the {graph} subtracts mean {list(mean)} and divides by std " \
          f"{list(std)} itself"
  else:
    how = f"then (x - mean) / std per channel, mean {list(mean)}, std " \
          f"{list(std)} (not part of these weights)"
  return {"input": f"float32 RGB in [0, 1], NCHW for torch (NHWC for JAX, "
                   f"the SavedModel and ONNX); {how}",
          "input_norm": norm, "input_mean": json.dumps(list(mean)),
          "input_std": json.dumps(list(std))}


def metadata(loaded: pretrained.Pretrained, *, fmt: str,
             include_head: bool) -> dict:
  """The file's metadata; all strings, as safetensors requires."""
  c = loaded.config
  network = encoder_with_head.create(c, bn_axis_name=None)
  meta = {
      "format": fmt, "model": str(c.model),
      "torchvision_model": (c.model if c.model in TORCHVISION_MODELS
                            and c.width_multiplier == 1 else ""),
      "width_multiplier": str(c.width_multiplier),
      "cifar_stem": json.dumps(bool(c.cifar_stem)),
      "image_size": str(c.image_size), "eval_augment": str(c.eval_augment),
      "method": str(c.method), "dataset": str(c.dataset),
      "step": str(loaded.step), "checkpoint": loaded.directory,
      "feature_dim": str(network.encoder.feature_dim),
      **input_metadata(c, fmt)}
  if hasattr(network.encoder, "bn_epsilon"):  # ResNets; a ViT has no BN.
    meta["bn_epsilon"] = repr(float(network.encoder.bn_epsilon))
  if hasattr(network.encoder, "patch_size"):
    meta["patch_size"] = str(network.encoder.patch_size)
    meta["timm_create"] = timm_layout.create_call(
        width=network.encoder.width, depth=network.encoder.depth,
        num_heads=network.encoder.num_heads,
        patch_size=network.encoder.patch_size, image_size=int(c.image_size))
  if include_head:
    meta["head"] = json.dumps({**c.head.to_dict(), "prefix": HEAD_PREFIX,
                               "bn_epsilon": network.head.bn_epsilon})
  return meta


# --- Writers -----------------------------------------------------------------

def check_out(out: str, fmt: str):
  """ExportError for a format or --out we cannot (or must not) write,
  before any work."""
  if fmt not in FORMATS:
    raise ExportError(f"--format={fmt!r} is not a known format; choose one "
                      f"of: {', '.join(FORMATS)}")
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise ExportError(f"--out={out}: directory {parent} does not exist")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ExportError(f"--out={out}: directory {parent} is not writable")
  if fmt == "saved_model" and os.path.exists(out):
    # Replacing a directory is not atomic, and it may hold anything.
    raise ExportError(f"--out={out} exists; a SavedModel goes into a new "
                      "directory")
  if os.path.isdir(out):
    raise ExportError(f"--out={out} is a directory; give a file name")


def _save_safetensors(tensors: dict, meta: dict, path: str):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path,
            metadata=meta)


def _save_npz(arrays: dict, meta: dict, path: str):
  with open(path, "wb") as f:
    # A str array, not an object one: np.load reads it without pickle.
    np.savez(f, __metadata__=np.asarray(json.dumps(meta)), **arrays)


def _torchvision_tensors(loaded, variables, head, meta) -> dict:
  if float(meta["bn_epsilon"]) != TORCH_BN_EPSILON:
    logging.warning("BatchNorm epsilon is %s, torch's default %g: set eps "
                    "on every BatchNorm", meta["bn_epsilon"], TORCH_BN_EPSILON)
  # The checkpoint step stands for the batches the statistics saw; torch
  # reads the count only for BatchNorm(momentum=None).
  tensors = torchvision_state_dict(variables, num_batches_tracked=loaded.step)
  if head is not None:
    tensors.update(head_state_dict(head, num_batches_tracked=loaded.step))
  return tensors


def export(checkpoint: str, *, fmt: str, out: str,
           include_head: bool = False) -> str:
  """Writes the encoder of `checkpoint` to `out`; returns a summary line."""
  check_out(out, fmt)
  if include_head and fmt in (*GRAPH_FORMATS, "timm"):
    raise ExportError(f"--include_head: --format={fmt} exports the "
                      "encoder only")
  if fmt == "onnx":
    graph_export.require_onnx()  # Before reading the checkpoint.
  loaded = pretrained.load(checkpoint)
  variables = jax.tree.map(np.asarray, loaded.variables)
  if fmt == "torchvision":
    check_resnet(loaded.config, variables)  # Before reading any more.
  if fmt == "timm" and not timm_layout.is_vit(variables):
    raise ExportError(
        f"--format=timm writes ViT encoders in timm's layout; this "
        f"checkpoint's encoder is {loaded.config.model!r}: use "
        "--format=torchvision for a ResNet")
  head = head_variables(loaded) if include_head else None
  meta = metadata(loaded, fmt=fmt, include_head=include_head)
  if fmt == "torchvision":
    tensors = _torchvision_tensors(loaded, variables, head, meta)
    atomic_files.write_atomically(out, lambda p: _save_safetensors(tensors, meta, p))
    what = f"{len(tensors)} tensors in torchvision layout"
  elif fmt == "timm":
    tensors = timm_layout.state_dict(
        variables, image_size=int(loaded.config.image_size))
    atomic_files.write_atomically(
        out, lambda p: _save_safetensors(tensors, meta, p))
    what = (f"{len(tensors)} tensors in timm's layout, for "
            f"{meta['timm_create']}")
  elif fmt == "npz":
    arrays = flat_tree(variables)
    if head is not None:
      arrays.update(flat_tree(head, prefix="head/"))
    atomic_files.write_atomically(out, lambda p: _save_npz(arrays, meta, p))
    what = f"{len(arrays)} arrays"
  elif fmt == "onnx":
    model = graph_export.onnx_model(loaded, meta)
    diff = graph_export.check_onnx(model, loaded)
    atomic_files.write_atomically(out, lambda p: graph_export.save_onnx(model, p))
    what = (f"an ONNX model (opset {graph_export.ONNX_OPSET}; onnxruntime "
            f"matches JAX to {diff:.1g})")
  else:
    atomic_files.write_atomically(out, lambda p: graph_export.save_saved_model(loaded, p),
                     directory=True)
    what = "a SavedModel"
  return (f"wrote {out}: {loaded.config.model} encoder of step "
          f"{loaded.step} as {what}")


# --- Command line ----------------------------------------------------------

def _define(fv, argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  holders = dict(
      checkpoint=flags.DEFINE_string("checkpoint", None, cli.CHECKPOINT_HELP,
                                     flag_values=fv),
      fmt=flags.DEFINE_string("format", "torchvision",
                              f"One of: {', '.join(FORMATS)}.",
                              flag_values=fv),
      out=flags.DEFINE_string(
          "out", None, "File to write (SavedModel: a new directory).",
          flag_values=fv),
      include_head=flags.DEFINE_bool(
          "include_head", False, "Also export the projection head.",
          flag_values=fv))
  flags.mark_flags_as_required(["checkpoint", "out"], flag_values=fv)
  return holders


def _body(f, args):
  del args
  cli.quiet_library_logs()
  print(export(f["checkpoint"].value, fmt=f["fmt"].value, out=f["out"].value,
               include_head=f["include_head"].value))


TOOL = cli.Tool(
    usage="python -m contrastive_jax.export --checkpoint=WORKDIR "
    f"--format={{{','.join(FORMATS)}}} --out=FILE [--include_head]",
    define=_define, body=_body)


run, main = cli.entry_points(TOOL)


if __name__ == "__main__":
  main()
