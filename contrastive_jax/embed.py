"""Embeddings of a whole dataset split with a pretrained encoder.

  python -m contrastive_jax.embed --checkpoint=WORKDIR --images=DATASET \
      --out=DIR [--split=train] [--batch_size=256] [--data_dir=...]

DATASET is any dataset string a config takes: digits, a TFDS name or
folder:PATH. `--checkpoint=pixels --image_size=S` embeds the pixels
baseline instead: each image resized to S x S, flattened (S*S*3 numbers),
for comparing an encoder's embeddings with the images themselves. Writes
  DIR/embeddings.npy  float32 [N, feature_dim]: row i is example i of the
                      split, after the pretraining config's eval_augment view
                      (what the kNN monitor and linear evaluation see);
  DIR/paths.txt       example i's id on line i (a folder's file path, or
                      'split[i]').
The work is cut into chunks of --chunk_size examples, each kept in
DIR/parts/ (00000.npy and the ids it holds, 00000.json) once complete, so
an interrupted run, or a rerun, computes only the chunks that are missing
or whose ids no longer match, then assembles. Batches run data-parallel
over every local device.
"""

import json
import os
import re

# Before TensorFlow loads: keep its C++ start-up chatter out of the output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from contrastive_jax import cli  # noqa: E402
from contrastive_jax import atomic_files, parallel  # noqa: E402
from contrastive_jax import pretrained  # noqa: E402
from contrastive_jax.errors import ConfigError, UserError  # noqa: E402

CHUNK_SIZE = 4096
EMBEDDINGS, PATHS, PARTS = "embeddings.npy", "paths.txt", "parts"
# What the parts were computed from; parts of anything else are dropped.
MANIFEST = "manifest.json"
# The manifest as of the last complete assembly: a rerun with nothing to
# compute and this in place has nothing to do.
ASSEMBLED = "assembled.json"
# Every file of ours in DIR/parts (nothing else there is touched).
_PART_FILE = re.compile(r"\d{5}\.(npy|json)|manifest\.json|assembled\.json")


# --checkpoint's name for the pixels baseline (models/pixels.py).
PIXELS = "pixels"


class EmbedError(UserError):
  """An embed flag (--out, --batch_size, --chunk_size) we cannot use."""


def pixels_config(image_size: int):
  """The config of the pixels "encoder" at `image_size`: resize, flatten."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  if (isinstance(image_size, bool) or not isinstance(image_size, int)
      or image_size < 1):
    raise EmbedError(f"--checkpoint=pixels needs --image_size, the side the "
                     f"images are resized to (a positive integer); got "
                     f"{image_size!r}")
  return ml_collections.ConfigDict(dict(
      model=PIXELS, image_size=image_size,
      eval_augment=f"resize({image_size})"))


def check_out(out: str):
  """EmbedError unless `out` is, or can be made, a writable directory:
  checked before anything is created."""
  path = os.path.abspath(out)
  if os.path.exists(path) and not os.path.isdir(path):
    raise EmbedError(f"--out={out} is a file; give a directory")
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise EmbedError(f"--out={out} cannot be created: {path} is a file")
  if not os.access(path, os.W_OK | os.X_OK):
    raise EmbedError(f"--out={out} cannot be created: {path} is not "
                     "writable")


def chunk_ranges(num_examples: int, chunk_size: int) -> list:
  """[(start, stop)] of the chunks covering the split, in order."""
  return [(s, min(s + chunk_size, num_examples))
          for s in range(0, num_examples, chunk_size)]


def _part(out, k, ext):
  return os.path.join(out, PARTS, f"{k:05d}.{ext}")


def _read_json(path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write(path, dump, mode="w"):
  """dump(file) into `path`, atomically."""
  def write(tmp):
    with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
      dump(f)
  atomic_files.write_atomically(path, write)


def chunk_done(out, k, ids, feature_dim) -> bool:
  """Whether part k holds embeddings of exactly these ids."""
  if _read_json(_part(out, k, "json")) != list(ids):
    return False
  try:
    part = np.load(_part(out, k, "npy"), mmap_mode="r")
  except (OSError, ValueError):
    return False
  return part.dtype == np.float32 and part.shape == (len(ids), feature_dim)


def fingerprint(variables) -> str:
  """sha256 of an encoder's variables (every leaf's path, dtype, shape and
  bytes): what parts are keyed on, so that a workdir trained again at the
  same path and step is never served from the old model's parts."""
  import hashlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    value = np.ascontiguousarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype}|"
                  f"{value.shape}|".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def _reset_parts(out, manifest):
  """Starts DIR/parts afresh unless its parts were computed from
  `manifest` (the same encoder, data, view and chunking)."""
  parts = os.path.join(out, PARTS)
  old = _read_json(os.path.join(parts, MANIFEST))
  if old == manifest:
    return
  if isinstance(old, dict):
    changed = sorted(k for k in set(old) | set(manifest)
                     if old.get(k) != manifest.get(k))
    logging.warning("Recomputing every part in %s: they were computed with "
                    "another %s", parts, ", ".join(changed))
  for name in os.listdir(parts):
    if _PART_FILE.fullmatch(name):
      os.remove(os.path.join(parts, name))
  _write(os.path.join(parts, MANIFEST), lambda f: json.dump(manifest, f))


def _ids_digest(ids) -> str:
  import hashlib  # pylint: disable=g-import-not-at-top
  return hashlib.sha256("\n".join(ids).encode("utf-8",
                                              "surrogateescape")).hexdigest()


def check_view(view, spec: str, size: int):
  """ConfigError unless the eval view makes images the encoder takes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shape = tuple(view(tf.zeros([size + 5, size + 3, 3]),
                     tf.zeros([2], tf.int64)).shape)
  if shape != (size, size, 3):
    raise ConfigError(f"eval_augment={spec!r} gives images of {shape}; the "
                      f"encoder takes {(size, size, 3)} (end the spec with "
                      "resize or center_crop)")


def image_batches(source, view, indices, batch_size):
  """float32 [<=B, S, S, 3] batches of the examples at `indices`, in order,
  through `view` as `pipeline.make_eval_dataset` applies it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  ds = source.examples(tf.data.Dataset.from_tensor_slices(
      np.asarray(indices, np.int64)))
  ds = ds.map(lambda example: pipeline.eval_image(view, example["image"]),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # Through the pipeline's iterator: a damaged record is one DataError line.
  return pipeline.as_numpy_iterator(
      ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


class Embedder:
  """images [<=B, S, S, 3] -> features [n, d] on every local device, each
  batch padded to B (a multiple of the device count: one compilation)."""

  def __init__(self, checkpoint: str, batch_size: int, image_size: int = 0):
    # pylint: disable-next=g-import-not-at-top
    from contrastive_jax.evaluation import features
    self.mesh = parallel.make_data_mesh(jax.local_devices())
    num_devices = self.mesh.devices.size
    self.batch_size = -(-batch_size // num_devices) * num_devices
    if checkpoint == PIXELS:
      self.config = pixels_config(image_size)
      self.step, self.directory, self.variables = -1, PIXELS, {}
    else:
      loaded = pretrained.load(checkpoint,
                               sharding=parallel.replicated(self.mesh))
      self.config, self.step = loaded.config, loaded.step
      self.directory, self.variables = loaded.directory, loaded.variables
    module = pretrained.encoder_module(self.config)
    self.feature_dim = module.feature_dim
    self._fn = features.sharded_feature_fn(
        lambda v, x: module.apply(v, x, train=False), self.mesh)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    n = images.shape[0]
    padded = np.zeros((self.batch_size,) + images.shape[1:], np.float32)
    padded[:n] = images
    batch = jax.device_put(padded, parallel.batch_sharded(self.mesh))
    return np.asarray(self._fn(self.variables, batch))[:n]


def _assemble(out, ranges, ids, feature_dim):
  """embeddings.npy from the parts (streamed: never all in memory), then
  paths.txt; each appears complete or not at all."""
  def write_embeddings(tmp):
    table = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                      shape=(len(ids), feature_dim))
    for k, (start, stop) in enumerate(ranges):
      table[start:stop] = np.load(_part(out, k, "npy"))
    table.flush()
    del table

  atomic_files.write_atomically(os.path.join(out, EMBEDDINGS), write_embeddings)
  _write(os.path.join(out, PATHS),
         lambda f: f.writelines(f"{i}\n" for i in ids))


def embed(checkpoint: str, *, images: str, out: str, split: str = "train",
          batch_size: int = 256, data_dir: str | None = None,
          chunk_size: int = CHUNK_SIZE, image_size: int = 0) -> dict:
  """Writes DIR/embeddings.npy and DIR/paths.txt (see the module
  docstring); returns {'num_examples', 'feature_dim', 'chunks',
  'computed': indices of the chunks computed by this call}."""
  for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise EmbedError(f"--{name}={value!r} must be a positive integer")
  # Cheap checks first: no data read yet.
  if checkpoint == PIXELS:
    pixels_config(image_size)
  else:
    pretrained.locate(checkpoint)
  check_out(out)
  # Only now TensorFlow (under the data modules), whose start-up lines on
  # stderr TF_CPP_MIN_LOG_LEVEL no longer silences (TF 2.21): the errors
  # above stay one line.
  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import augment, sources
  from contrastive_jax.evaluation.features import Progress
  # pylint: enable=g-import-not-at-top
  source = sources.open_source(images, split, data_dir=data_dir)
  embedder = Embedder(checkpoint, batch_size, image_size)
  config, size = embedder.config, int(embedder.config.image_size)
  view = augment.build_view(config.eval_augment, "eval_augment")
  check_view(view, config.eval_augment, size)
  ids = [str(i) for i in source.example_ids()]
  ranges = chunk_ranges(len(ids), chunk_size)
  manifest = {"checkpoint": embedder.directory, "step": embedder.step,
              "encoder_sha256": fingerprint(embedder.variables),
              "image_ids_sha256": _ids_digest(ids),
              "dataset": images, "split": split, "data_dir": data_dir,
              "eval_augment": config.eval_augment, "image_size": size,
              "chunk_size": chunk_size, "num_examples": len(ids),
              "feature_dim": embedder.feature_dim}
  try:
    os.makedirs(os.path.join(out, PARTS), exist_ok=True)
  except OSError as e:
    raise EmbedError(f"--out={out} cannot be created: {e.strerror}") from e
  _reset_parts(out, manifest)
  todo = [k for k, (a, b) in enumerate(ranges)
          if not chunk_done(out, k, ids[a:b], embedder.feature_dim)]
  result = {"num_examples": len(ids), "feature_dim": embedder.feature_dim,
            "chunks": len(ranges), "computed": []}
  assembled = os.path.join(out, PARTS, ASSEMBLED)
  if (not todo and _read_json(assembled) == manifest and all(
      os.path.exists(os.path.join(out, f)) for f in (EMBEDDINGS, PATHS))):
    return result
  if os.path.exists(assembled):
    os.remove(assembled)
  progress = Progress(
      f"embedding {images} {split}",
      sum(-(-(b - a) // embedder.batch_size) for a, b in
          (ranges[k] for k in todo)))
  done_batches = 0
  for k in todo:
    start, stop = ranges[k]
    features = []
    for batch in image_batches(source, view, range(start, stop),
                               embedder.batch_size):
      features.append(embedder(batch))
      done_batches += 1
      progress(done_batches)
    source.input_metrics()  # Stops (DataError) when too many are bad.
    # The ids last: they mark the part complete.
    _write(_part(out, k, "npy"),
           lambda f: np.save(f, np.concatenate(features)), "wb")
    _write(_part(out, k, "json"), lambda f: json.dump(ids[start:stop], f))
  bad = source.input_metrics().get("bad_images", 0)
  if bad:
    logging.warning("%d unreadable images: their rows hold the embedding "
                    "of the next readable file", bad)
  _assemble(out, ranges, ids, embedder.feature_dim)
  _write(assembled, lambda f: json.dump(manifest, f))
  return dict(result, computed=todo)


def _define(fv, argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  holders = dict(
      checkpoint=flags.DEFINE_string("checkpoint", None, cli.CHECKPOINT_HELP,
                                     flag_values=fv),
      images=flags.DEFINE_string(
          "images", None, "Dataset: digits, a TFDS name or folder:PATH.",
          flag_values=fv),
      out=flags.DEFINE_string("out", None, "Directory to write.",
                              flag_values=fv),
      split=flags.DEFINE_string("split", "train", "Split of --images.",
                                flag_values=fv),
      batch_size=flags.DEFINE_integer(
          "batch_size", 256, "Images per step over all local devices "
          "(rounded up to a multiple of their number).", flag_values=fv),
      data_dir=flags.DEFINE_string("data_dir", None, "TFDS data directory.",
                                   flag_values=fv),
      chunk_size=flags.DEFINE_integer(
          "chunk_size", CHUNK_SIZE, "Examples per resumable part.",
          flag_values=fv),
      image_size=flags.DEFINE_integer(
          "image_size", 0, "With --checkpoint=pixels: the side images are "
          "resized to before they are flattened.", flag_values=fv))
  flags.mark_flags_as_required(["checkpoint", "images", "out"],
                               flag_values=fv)
  return holders


def _body(f, args):
  del args
  cli.quiet_library_logs()
  value = {name: holder.value for name, holder in f.items()}
  result = embed(value.pop("checkpoint"), **value)
  print(f"wrote {value['out']}/{EMBEDDINGS} [{result['num_examples']}, "
        f"{result['feature_dim']}] and {PATHS}; computed "
        f"{len(result['computed'])} of {result['chunks']} chunks")


TOOL = cli.Tool(
    usage="python -m contrastive_jax.embed --checkpoint=WORKDIR "
    "--images=DATASET --out=DIR [--split=S] [--batch_size=N]",
    define=_define, body=_body)


run, main = cli.entry_points(TOOL)


if __name__ == "__main__":
  main()
