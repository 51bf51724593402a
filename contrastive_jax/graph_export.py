"""The exports that carry the encoder's computation, not only its weights: a
TF SavedModel (jax2tf) and an ONNX model (jax2onnx). Both take float32 NHWC
images [B, S, S, 3] in [0, 1], any B, and return features [B, d], with the
config's `input_norm` applied inside, as the JAX encoder does.

ONNX: jax2onnx swaps Flax Linen functions for its own lowerings while it
traces, and those mis-handle our ResNet (`nn.max_pool` with explicit padding
pairs fails; its Linen Conv lowering gives ResNet-18/50 graphs that
onnxruntime rejects). So it is given the encoder's jaxpr, traced here
beforehand with a symbolic batch, and converts its lax primitives one by one.
One primitive is rewritten first: jax2onnx lowers a 2-D `reduce_window_max`
over NHWC as a 4-D MaxPool, which onnxruntime does not run.
"""

import contextlib
import logging as std_logging

import jax
import numpy as np
from jax import export as jax_export
from jax import lax
from jax.extend import core as jex_core

from contrastive_jax.errors import UserError
from contrastive_jax import pretrained

# The ONNX opset the model declares (onnxruntime >= 1.14 runs it).
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "features"
INSTALL_ONNX = "pip install -e '.[onnx]'"
# The export checks its model against JAX on random images; a conversion bug
# is off by O(1), float32 rounding by ~1e-6 of the features' scale.
ONNX_TOLERANCE = 1e-3


def _encoder_fn(loaded: pretrained.Pretrained):
  module = pretrained.encoder_module(loaded.config)
  variables = jax.tree.map(np.asarray, loaded.variables)
  return lambda x: module.apply(variables, x, train=False)


# --- TF SavedModel -----------------------------------------------------------

def save_saved_model(loaded: pretrained.Pretrained, path: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators.
  module, size = (pretrained.encoder_module(loaded.config),
                  int(loaded.config.image_size))
  apply = jax2tf.convert(
      lambda v, x: module.apply(v, x, train=False), with_gradient=False,
      polymorphic_shapes=[None, f"(b, {size}, {size}, 3)"])

  class Encoder(tf.Module):

    def __init__(self, variables):
      super().__init__()
      # Variables, not constants: as constants a large encoder would pass
      # the 2 GiB GraphDef limit.
      self.encoder_variables = tf.nest.map_structure(tf.Variable, variables)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    def __call__(self, images):
      return apply(self.encoder_variables, images)

  encoder = Encoder(jax.tree.map(np.asarray, loaded.variables))
  tf.saved_model.save(encoder, path,
                      signatures={"serving_default": encoder.__call__})
  # A SavedModel that TensorFlow cannot run is no export: jax >= 0.11
  # writes StableHLO newer than TensorFlow 2.21's XlaCallModule reads
  # ('failed to deserialize portable artifact'), found only when run.
  try:
    tf.saved_model.load(path)(tf.zeros([1, size, size, 3], tf.float32))
  except tf.errors.InvalidArgumentError as e:
    if "deserialize" not in str(e):
      raise
    raise UserError(
        f"--format=saved_model: TensorFlow {tf.__version__} cannot run the "
        f"SavedModel that jax {jax.__version__} writes (its StableHLO is "
        "newer than TensorFlow reads); export --format=onnx, torchvision or "
        "npz, or write the SavedModel with jax 0.10") from None


# --- ONNX --------------------------------------------------------------------

def require_onnx():
  """UserError naming the pip command unless jax2onnx, onnx and onnxruntime
  import; checked before the checkpoint is read."""
  try:
    import jax2onnx  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import onnx  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import onnxruntime  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise UserError(f"--format=onnx needs the package {e.name or e}, which is "
                    f"not installed: {INSTALL_ONNX}") from None


def _max_pool_nhwc(x, params):
  """reduce_window_max over H, W of NHWC `x`, as a 3-D pooling over
  [B*C, H, W], which jax2onnx lowers to an ONNX MaxPool that runs; None
  where `params` pool another way."""
  win, strides, pad = (params["window_dimensions"], params["window_strides"],
                       params["padding"])
  if (x.ndim != 4 or win[0] != 1 or win[3] != 1 or strides[0] != 1
      or strides[3] != 1 or tuple(pad[0]) != (0, 0)
      or tuple(pad[3]) != (0, 0)
      or any(d != 1 for d in params["base_dilation"])
      or any(d != 1 for d in params["window_dilation"])):
    return None
  b, h, w, c = x.shape
  y = lax.reshape(lax.transpose(x, (0, 3, 1, 2)), (b * c, h, w))
  y = lax.reduce_window_max_p.bind(
      y, window_dimensions=(1, *win[1:3]), window_strides=(1, *strides[1:3]),
      padding=((0, 0), *map(tuple, pad[1:3])), base_dilation=(1, 1, 1),
      window_dilation=(1, 1, 1))
  return lax.transpose(lax.reshape(y, (b, c, *y.shape[1:])), (0, 2, 3, 1))


def _eval_jaxpr(jaxpr, consts, *args):
  """jax.core.eval_jaxpr, with nested jit calls inlined and NHWC max-pools
  rewritten by `_max_pool_nhwc`."""
  env = {}

  def read(v):
    return v.val if isinstance(v, jex_core.Literal) else env[v]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = value
  for var, value in zip(jaxpr.invars, args):
    env[var] = value
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    inner = eqn.params.get("jaxpr")
    outs = None
    if eqn.primitive.name in ("jit", "pjit") and isinstance(
        inner, jex_core.ClosedJaxpr):
      outs = _eval_jaxpr(inner.jaxpr, inner.consts, *invals)
    elif eqn.primitive is lax.reduce_window_max_p:
      pooled = _max_pool_nhwc(invals[0], eqn.params)
      outs = None if pooled is None else [pooled]
    if outs is None:
      params = eqn.primitive.get_bind_params(eqn.params)
      subfuns = []
      if isinstance(params, tuple):  # jax < 0.10: (subfuns, params)
        subfuns, params = params
      outs = eqn.primitive.bind(*subfuns, *invals, **params)
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for var, value in zip(eqn.outvars, outs):
      env[var] = value
  return [read(v) for v in jaxpr.outvars]


@contextlib.contextmanager
def _quiet_converter():
  """jax2onnx imports every plugin it has and logs a traceback for each
  that cannot load (Equinox, dm-pix, ... models we do not convert)."""
  loggers = [std_logging.getLogger(n) for n in ("jax2onnx", "onnx_ir")]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(std_logging.ERROR)
  try:
    yield
  finally:
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)


def onnx_model(loaded: pretrained.Pretrained, meta: dict):
  """The encoder as an onnx.ModelProto: images [B, S, S, 3] -> features
  [B, d], B symbolic; `meta` in its metadata_props."""
  import jax2onnx  # pylint: disable=g-import-not-at-top
  import onnx  # pylint: disable=g-import-not-at-top
  size = int(loaded.config.image_size)
  spec = jax.ShapeDtypeStruct(
      jax_export.symbolic_shape(f"B, {size}, {size}, 3"), np.float32)
  closed = jax.make_jaxpr(_encoder_fn(loaded))(spec)
  with _quiet_converter():
    # The same `spec`: the jaxpr's shapes and the converter's input share
    # one symbolic B.
    model = jax2onnx.to_onnx(
        lambda x: _eval_jaxpr(closed.jaxpr, closed.consts, x)[0], [spec],
        model_name=f"{loaded.config.model}_encoder", opset=ONNX_OPSET,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
  onnx.helper.set_model_props(model, meta)
  return model


def check_onnx(model, loaded: pretrained.Pretrained, *, batch=2) -> float:
  """Runs `model` in onnxruntime on random images; the max abs difference
  from the JAX encoder, or UserError past ONNX_TOLERANCE (relative)."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  size = int(loaded.config.image_size)
  images = np.random.default_rng(0).uniform(
      size=(batch, size, size, 3)).astype(np.float32)
  session = onnxruntime.InferenceSession(
      model.SerializeToString(), providers=["CPUExecutionProvider"])
  (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
  want = np.asarray(jax.jit(_encoder_fn(loaded))(images))
  diff = float(np.abs(got - want).max())
  if not diff <= ONNX_TOLERANCE * max(1.0, float(np.abs(want).max())):
    raise UserError(
        f"--format=onnx: onnxruntime's features differ from JAX's by up to "
        f"{diff:.3g} (|features| up to {np.abs(want).max():.3g}); this "
        f"{loaded.config.model} encoder does not convert correctly")
  return diff


def save_onnx(model, path: str):
  import onnx  # pylint: disable=g-import-not-at-top
  try:
    onnx.save_model(model, path)
  except ValueError as e:  # protobuf's 2 GiB limit on one message
    raise UserError(f"--format=onnx: cannot write one ONNX file: {e}") from e
