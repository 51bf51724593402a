"""`python -m contrastive_jax.export`: the torchvision file is checked
against an independent NumPy forward pass that follows torchvision's
conventions (NCHW, OIHW, explicit padding, eval-mode BatchNorm) and reads
nothing but the exported arrays by their torchvision names; torch itself is
not needed. Then the npz and SavedModel formats and the input metadata (the
bad-input rows: tests/test_export_bad_input.py)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import contrastive_jax
from contrastive_jax import checkpointing, export, models, train
from contrastive_jax.data import digits
from contrastive_jax.errors import UserError
from tests.test_evaluation import load_config

EPS = 1e-5  # torch.nn.BatchNorm2d's default, and ours


# --- torchvision's forward pass in NumPy (float64) ---------------------------

def conv2d(x, weight, stride, padding):
  """torch.nn.functional.conv2d: x NCHW, weight OIHW, no bias."""
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  kh, kw = weight.shape[2:]
  windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), (2, 3))
  return np.einsum("nchwij,ocij->nohw", windows[:, :, ::stride, ::stride],
                   weight)


def batch_norm(x, sd, name):
  """Eval-mode BatchNorm{1,2}d over axis 1, from its running statistics."""
  shape = (1, -1) + (1,) * (x.ndim - 2)
  get = lambda field: sd[f"{name}.{field}"].reshape(shape)
  return ((x - get("running_mean")) / np.sqrt(get("running_var") + EPS)
          * get("weight") + get("bias"))


def max_pool_3x3_s2_p1(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), (2, 3))
  return windows[:, :, ::2, ::2].max(axis=(-2, -1))


def relu(x):
  return np.maximum(x, 0)


def residual_block(x, sd, name, stride):
  """torchvision's BasicBlock, or Bottleneck (v1.5: stride in conv2)."""
  if f"{name}.conv3.weight" in sd:
    y = relu(batch_norm(conv2d(x, sd[f"{name}.conv1.weight"], 1, 0), sd,
                        f"{name}.bn1"))
    y = relu(batch_norm(conv2d(y, sd[f"{name}.conv2.weight"], stride, 1), sd,
                        f"{name}.bn2"))
    y = batch_norm(conv2d(y, sd[f"{name}.conv3.weight"], 1, 0), sd,
                   f"{name}.bn3")
  else:
    y = relu(batch_norm(conv2d(x, sd[f"{name}.conv1.weight"], stride, 1), sd,
                        f"{name}.bn1"))
    y = batch_norm(conv2d(y, sd[f"{name}.conv2.weight"], 1, 1), sd,
                   f"{name}.bn2")
  if f"{name}.downsample.0.weight" in sd:
    x = batch_norm(conv2d(x, sd[f"{name}.downsample.0.weight"], stride, 0),
                   sd, f"{name}.downsample.1")
  return relu(y + x)


def torchvision_features(sd, images_nchw, *, cifar_stem):
  """torchvision ResNet.forward up to the pooled features (fc removed); a
  CIFAR stem is conv1 3x3/1 padding 1 and no max-pool."""
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  if cifar_stem:
    x = relu(batch_norm(conv2d(images_nchw, sd["conv1.weight"], 1, 1), sd,
                        "bn1"))
  else:
    x = relu(batch_norm(conv2d(images_nchw, sd["conv1.weight"], 2, 3), sd,
                        "bn1"))
    x = max_pool_3x3_s2_p1(x)
  layer = 1
  while f"layer{layer}.0.conv1.weight" in sd:
    block = 0
    while f"layer{layer}.{block}.conv1.weight" in sd:
      stride = 2 if layer > 1 and block == 0 else 1
      x = residual_block(x, sd, f"layer{layer}.{block}", stride)
      block += 1
    layer += 1
  return x.mean(axis=(2, 3))


def to_nchw(images_nhwc):
  return np.transpose(images_nhwc, (0, 3, 1, 2)).astype(np.float64)


# --- Checkpoints -------------------------------------------------------------

def digits_config():
  c = load_config("simclr", "digits")  # tiny_resnet x2, CIFAR stem, 16 px
  c.batch_size = 16
  c.num_train_steps = 2
  c.checkpoint_every_steps = 2
  c.warmup_epochs = 0.0
  c.knn.every_steps = 0
  c.preview_images = 0
  c.async_checkpointing = False
  return c


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  """A real 2-step SimCLR digits run: its workdir."""
  workdir = str(tmp_path_factory.mktemp("simclr_digits"))
  train.train_and_evaluate(digits_config(), workdir,
                           devices=jax.devices()[:2])
  return workdir


def save_checkpoint(workdir, config, encoder_variables, step=7):
  """A pretraining checkpoint as the loop writes it (Orbax, state + config),
  holding only what `load_encoder` reads."""
  ckpt = checkpointing.Checkpointer(str(workdir), save_every_steps=1, keep=1,
                                    asynchronous=False)
  state = {"params": {"encoder": encoder_variables["params"]},
           "batch_stats": {"encoder": encoder_variables["batch_stats"]}}
  ckpt.save(step, state, config, force=True)
  ckpt.close()
  return str(workdir)


def random_variables(module, size, seed=0):
  """Variables of `module` with every value random (BN scales, biases and
  running statistics too), so no branch of the network is a no-op."""
  abstract = jax.eval_shape(
      lambda x: module.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = np.prod(leaf.shape[:-1])
      return rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)
    if name == "scale":
      # Below 1, so activations stay near 1 through 16 residual blocks
      # (at 0.5-1.5 they reach ~1e3, and float32 rounding ~1e-3 with them).
      return rng.uniform(0.2, 0.6, size=leaf.shape)
    if name == "var":
      return rng.uniform(0.5, 1.5, size=leaf.shape)
    return rng.normal(size=leaf.shape) * 0.1  # bias, mean

  return jax.tree_util.tree_map_with_path(
      lambda p, l: draw(p, l).astype(np.float32), abstract)


@pytest.fixture(scope="module")
def resnet50_checkpoint(tmp_path_factory):
  """ResNet-50 (7x7 stem + max-pool, bottlenecks) with random variables at
  32 px, saved as a pretraining checkpoint."""
  c = digits_config()
  c.model, c.width_multiplier, c.cifar_stem = "resnet50", 1, False
  c.image_size, c.eval_augment = 32, "resize(32)"
  variables = random_variables(models.create_encoder("resnet50"), 32)
  return save_checkpoint(tmp_path_factory.mktemp("resnet50"), c, variables)


def digit_images(size):
  """The first test digits as the eval view resize(size) makes them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = digits.load_digits_split("test")["image"][:6]
  return tf.image.resize(images.astype(np.float32) / 255.0, (size, size),
                         method="bicubic").numpy().clip(0, 1)


# --- torchvision -------------------------------------------------------------

@pytest.mark.parametrize("run", ["digits_run", "resnet50_checkpoint"])
def test_torchvision_forward_of_export_equals_load_encoder(run, request,
                                                           tmp_path):
  workdir = request.getfixturevalue(run)
  out = str(tmp_path / "encoder.safetensors")
  export.export(workdir, fmt="torchvision", out=out)
  encoder = contrastive_jax.load_encoder(workdir)
  with safe_open(out, "np") as f:
    meta = f.metadata()
  assert meta["model"] == encoder.config.model
  assert meta["image_size"] == str(encoder.image_size)
  assert meta["step"] == str(encoder.step)
  assert meta["feature_dim"] == str(encoder.feature_dim)
  assert float(meta["bn_epsilon"]) == EPS
  assert "[0, 1]" in meta["input"] and "no mean/std" in meta["input"]
  images = digit_images(encoder.image_size)
  want = encoder(images)
  got = torchvision_features(load_file(out), to_nchw(images),
                             cifar_stem=json.loads(meta["cifar_stem"]))
  assert np.abs(want).max() > 1e-2  # not a trivially zero network
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def torchvision_resnet50_shapes():
  """torchvision.models.resnet50().state_dict() minus fc.*, by the rules of
  torchvision's ResNet._make_layer (expansion 4, downsample on block 0)."""
  def bn(name, n):
    return {f"{name}.weight": (n,), f"{name}.bias": (n,),
            f"{name}.running_mean": (n,), f"{name}.running_var": (n,),
            f"{name}.num_batches_tracked": ()}
  shapes = {"conv1.weight": (64, 3, 7, 7), **bn("bn1", 64)}
  inplanes = 64
  for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)),
                                       start=1):
    for j in range(blocks):
      name = f"layer{i}.{j}"
      shapes.update({f"{name}.conv1.weight": (planes, inplanes, 1, 1),
                     f"{name}.conv2.weight": (planes, planes, 3, 3),
                     f"{name}.conv3.weight": (planes * 4, planes, 1, 1),
                     **bn(f"{name}.bn1", planes), **bn(f"{name}.bn2", planes),
                     **bn(f"{name}.bn3", planes * 4)})
      if j == 0:
        shapes.update({f"{name}.downsample.0.weight":
                       (planes * 4, inplanes, 1, 1),
                       **bn(f"{name}.downsample.1", planes * 4)})
      inplanes = planes * 4
  return shapes


def test_resnet50_export_has_torchvision_keys_and_shapes_minus_fc():
  module = models.create_encoder("resnet50")
  abstract = jax.eval_shape(
      lambda x: module.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  # Zero-stride views: the names and layouts, without 100 MB of zeros.
  variables = jax.tree.map(
      lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), abstract)
  export.check_resnet(load_config("simclr", "imagenet"), variables)
  sd = export.torchvision_state_dict(variables)
  want = torchvision_resnet50_shapes()
  # torchvision resnet50: 320 entries, fc.weight and fc.bias among them.
  assert len(want) == 318
  assert set(sd) == set(want)
  assert {k: v.shape for k, v in sd.items()} == want
  assert sd["bn1.num_batches_tracked"].dtype == np.int64


def test_head_exports_as_torch_linear_and_batchnorm1d():
  head = models.ProjectionHead(num_layers=3, hidden_dim=12, output_dim=5,
                               use_bn=True)
  h = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
  abstract = jax.eval_shape(lambda: head.init(jax.random.key(0), h,
                                              train=False))
  rng = np.random.default_rng(2)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
      if p[-1].key in ("var", "scale") else
      rng.normal(size=s.shape).astype(np.float32), abstract)
  sd = {k[len(export.HEAD_PREFIX):]: v.astype(np.float64) for k, v in
        export.head_state_dict(variables).items()}
  assert sd["dense1.weight"].shape == (12, 8)  # torch Linear: [out, in]
  x = relu(batch_norm(h @ sd["dense1.weight"].T, sd, "bn1"))
  x = relu(batch_norm(x @ sd["dense2.weight"].T, sd, "bn2"))
  z = batch_norm(x @ sd["dense3.weight"].T, sd, "bn_out")
  np.testing.assert_allclose(z, head.apply(variables, h, train=False),
                             rtol=1e-4, atol=1e-5)


def test_include_head_adds_the_trained_head(digits_run, tmp_path):
  out = str(tmp_path / "with_head.safetensors")
  export.export(digits_run, fmt="torchvision", out=out, include_head=True)
  sd = load_file(out)
  head_keys = {k for k in sd if k.startswith("head.")}
  # digits: SimCLR v1's head, hidden 64, output 32: Dense -> BN -> ReLU ->
  # Dense -> BN without centre (written with a zero bias). No Dense bias.
  bn = ("weight", "bias", "running_mean", "running_var",
        "num_batches_tracked")
  assert head_keys == {"head.dense1.weight", "head.dense2.weight",
                       *(f"head.bn1.{k}" for k in bn),
                       *(f"head.bn_out.{k}" for k in bn)}
  assert sd["head.dense2.weight"].shape == (32, 64)
  np.testing.assert_array_equal(sd["head.bn_out.bias"], np.zeros(32))
  assert not any(k.startswith("probe") for k in sd)
  with safe_open(out, "np") as f:
    assert json.loads(f.metadata()["head"])["output_dim"] == 32


# --- npz and SavedModel ------------------------------------------------------

def test_npz_is_the_flax_tree(digits_run, tmp_path):
  out = str(tmp_path / "encoder.npz")
  export.export(digits_run, fmt="npz", out=out)
  encoder = contrastive_jax.load_encoder(digits_run)
  with np.load(out) as npz:
    arrays = dict(npz)
  meta = json.loads(str(arrays.pop("__metadata__")))
  assert meta["model"] == "tiny_resnet"
  want = export.flat_tree(encoder.variables)
  assert "params/stem_conv/kernel" in arrays
  assert set(arrays) == set(want)
  for key, value in want.items():
    np.testing.assert_array_equal(arrays[key], value)


def test_saved_model_computes_the_encoder(digits_run, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "saved_model")
  try:
    export.export(digits_run, fmt="saved_model", out=out)
  except UserError as e:
    # jax >= 0.11 writes StableHLO that TensorFlow 2.21 cannot read: one
    # line, and no SavedModel that would fail only when run.
    assert "cannot run the SavedModel that jax" in str(e), e
    assert jax.__version_info__ >= (0, 11) and not os.path.exists(out)
    return
  encoder = contrastive_jax.load_encoder(digits_run)
  images = digit_images(encoder.image_size)
  loaded = tf.saved_model.load(out)
  np.testing.assert_allclose(loaded(tf.constant(images)).numpy(),
                             encoder(images), rtol=1e-5, atol=1e-5)
  serving = loaded.signatures["serving_default"]
  (features,) = serving(images=tf.constant(images[:2])).values()
  assert features.shape == (2, encoder.feature_dim)


def test_input_metadata_follows_the_config_normalisation():
  import ml_collections  # pylint: disable=g-import-not-at-top
  plain = export.input_metadata(ml_collections.ConfigDict(), "npz")
  assert plain["input_norm"] == "none" and "no mean/std" in plain["input"]
  moco = ml_collections.ConfigDict(dict(input_norm="imagenet"))
  torch_meta = export.input_metadata(moco, "torchvision")
  assert json.loads(torch_meta["input_mean"]) == [0.485, 0.456, 0.406]
  assert json.loads(torch_meta["input_std"]) == [0.229, 0.224, 0.225]
  assert "(x - mean) / std" in torch_meta["input"]
  assert "itself" in export.input_metadata(moco, "saved_model")["input"]
