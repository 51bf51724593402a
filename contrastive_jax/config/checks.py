"""Config validation, before anything touches the workdir or the devices.

The one validation layer: `validate` checks every field of a config in one
pass, before anything is built. Each check raises `ConfigError` with one line
naming the field, the value and what is allowed. A component's choices are
checked here by that component's own `check_config` (the encoder, the
optimizer, the EMA a method asks for, the method's own fields), the same
code its factory runs on its arguments, so that each rule is written once. The augmentation ops'
arguments need TensorFlow: the loop builds the views right after this, still
before the workdir is touched.
"""

import math
import numbers

import ml_collections

from contrastive_jax import ema, methods, models, optim
from contrastive_jax.config import lib as config_lib
from contrastive_jax.data import view_spec
from contrastive_jax.errors import ConfigError


def _require(ok: bool, field: str, value, allowed: str):
  if not ok:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def _is_number(value) -> bool:
  """A finite real number (not a bool): inf and nan train nothing."""
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))


def _positive_number(config, field: str):
  value = config[field]
  _require(_is_number(value) and value > 0, field, value,
           "must be a finite number > 0")


def _non_negative_number(config, field: str):
  value = config[field]
  _require(_is_number(value) and value >= 0, field, value,
           "must be a finite number >= 0")


def _positive_int(config, field: str):
  value = config[field]
  _require(isinstance(value, numbers.Integral) and not isinstance(value, bool)
           and value > 0, field, value, "must be an integer > 0")


def validate(config: ml_collections.ConfigDict, *, num_devices: int,
             num_processes: int):
  """Checks the fields every method uses."""
  for field in ("batch_size", "image_size", "log_every_steps",
                "checkpoint_every_steps", "keep_checkpoints"):
    _positive_int(config, field)
  # (`temperature`: by the methods that read it, Method.validate_config.)
  _positive_number(config, "learning_rate")
  if config.num_train_steps == -1:
    _positive_number(config, "num_epochs")
  else:
    _require(isinstance(config.num_train_steps, int)
             and config.num_train_steps > 0, "num_train_steps",
             config.num_train_steps,
             "must be -1 (derive from num_epochs) or an integer > 0")
  limit = config_lib.value(config, "max_consecutive_nonfinite")
  _require(isinstance(limit, int) and not isinstance(limit, bool)
           and limit >= 0, "max_consecutive_nonfinite", limit,
           "must be an integer >= 0")
  for field in ("warmup_epochs", "weight_decay"):
    _non_negative_number(config, field)
  probe_lr = config_lib.value(config, "probe_learning_rate")
  _require(_is_number(probe_lr) and (probe_lr > 0 or probe_lr == -1)
           and math.isfinite(probe_lr), "probe_learning_rate", probe_lr,
           "must be a number > 0, or -1 (the method's learning rate)")
  weight_decay_end = config_lib.value(config, "weight_decay_end")
  _require(_is_number(weight_decay_end) and (weight_decay_end >= 0 or
                                             weight_decay_end == -1),
           "weight_decay_end", weight_decay_end,
           "must be a number >= 0 (a cosine from weight_decay to it), or -1 "
           "(constant)")
  clip_grad = config_lib.value(config, "clip_grad")
  _require(_is_number(clip_grad) and clip_grad >= 0
           and math.isfinite(clip_grad), "clip_grad", clip_grad,
           "must be a number > 0 (each parameter's gradient norm), or 0 (off)")
  lars_eta = config_lib.value(config, "lars_eta")
  _require(_is_number(lars_eta) and lars_eta > 0, "lars_eta", lars_eta,
           "must be a finite number > 0 (LARS's trust coefficient)")
  clip_lr = config_lib.value(config, "lars_clip_lr")
  _require(isinstance(clip_lr, bool), "lars_clip_lr", clip_lr,
           "must be True or False")
  momentum = config_lib.value(config, "momentum")
  _require(_is_number(momentum) and 0 <= momentum < 1, "momentum", momentum,
           "must be a number in [0, 1)")
  _require(config.batch_size % num_devices == 0, "batch_size",
           config.batch_size,
           f"the global batch must divide evenly over the {num_devices} "
           "devices")
  _require(config.batch_size % num_processes == 0, "batch_size",
           config.batch_size,
           f"the global batch must divide evenly over the {num_processes} "
           "processes")
  _positive_int(config, "eval_batch_size")
  _require(config.eval_batch_size % num_devices == 0, "eval_batch_size",
           config.eval_batch_size,
           f"must divide evenly over the {num_devices} devices")
  _require(isinstance(config.dataset, str) and bool(config.dataset),
           "dataset", config.dataset,
           "must be 'digits', 'folder:PATH' or a TFDS dataset name")
  head = config.head
  _require(isinstance(head.num_layers, int) and head.num_layers >= 1,
           "head.num_layers", head.num_layers, "must be an integer >= 1")
  _require(isinstance(head.output_dim, int) and head.output_dim >= 1,
           "head.output_dim", head.output_dim, "must be an integer >= 1")
  _check_bookkeeping(config)
  _check_knn(config)
  _check_health(config)
  _check_views(config)
  on_device = config_lib.value(config, "augment_on_device")
  _require(isinstance(on_device, bool), "augment_on_device", on_device,
           "must be True or False")
  models.check_config(config)
  optim.check_config(config)
  method = methods.get_method(config.method)
  if method.ema is not None:  # The method asks for an EMA target.
    ema.check_momentum(config.get("ema_momentum"),
                       config_lib.value(config, "ema_momentum_schedule"))
  # The method's own fields (MoCo: queue size, BN groups).
  method.validate_config(config, num_devices=num_devices)


def _check_knn(config):
  """The kNN monitor's fields (checked whether it is on or not: a run
  switching it on later should not stop on them)."""
  knn = config.get("knn")
  if knn is None:
    return
  _require(isinstance(knn.every_steps, int)
           and not isinstance(knn.every_steps, bool), "knn.every_steps",
           knn.every_steps, "must be an integer (<= 0: off)")
  _require(isinstance(knn.k, int) and not isinstance(knn.k, bool)
           and knn.k >= 1, "knn.k", knn.k,
           "must be an integer >= 1: the neighbours that vote")
  _require(_is_number(knn.temperature) and knn.temperature > 0,
           "knn.temperature", knn.temperature, "must be a finite number > 0")
  _require(isinstance(knn.bank_size, int)
           and not isinstance(knn.bank_size, bool), "knn.bank_size",
           knn.bank_size, "must be an integer (<= 0: the whole train split)")


def _non_negative_int(config, field: str):
  value = config_lib.value(config, field)
  _require(isinstance(value, int) and not isinstance(value, bool)
           and value >= 0, field, value, "must be an integer >= 0")


def _check_bookkeeping(config):
  """Seed, preview, profiler and damaged-data fields (absent in configs of
  older runs: their defaults)."""
  for field in ("seed", "preview_images", "profile_steps",
                "profile_start_step"):
    _non_negative_int(config, field)
  fraction = config_lib.value(config, "data.max_bad_fraction")
  _require(_is_number(fraction) and 0 <= fraction <= 1,
           "data.max_bad_fraction", fraction, "must be a number in [0, 1]")


def _check_health(config):
  """The health monitor's fields and stop_on_collapse (absent in configs
  from before the monitor: its defaults)."""
  if config.get("health") is not None:
    every = config_lib.value(config, "health.every_steps")
    _require(isinstance(every, int) and not isinstance(every, bool),
             "health.every_steps", every,
             "must be an integer (-1: knn.every_steps; 0: off)")
    examples = config_lib.value(config, "health.num_examples")
    _require(isinstance(examples, int) and not isinstance(examples, bool)
             and examples >= 0, "health.num_examples", examples,
             "must be an integer >= 0 (0: off)")
  for field in ("stop_on_collapse", "knn_eval"):
    value = config_lib.value(config, field)
    _require(isinstance(value, bool), field, value, "must be True or False")


def _check_views(config):
  """Each augmentation spec parses, names known ops with valid arguments
  (their checks in data/op_table.py, without TensorFlow), and the images it
  makes are image_size: the checkpoint keeps image_size, and load_encoder
  and export expect images of that size. The eval view must make a fixed
  size."""
  size = config.image_size
  fields = ["view_augment", "eval_augment"]
  if config_lib.value(config, "view_augment_2"):
    fields.insert(1, "view_augment_2")
  for field in fields:
    spec = config[field]
    view_spec.check_spec(spec, field)
    output = view_spec.output_size(spec, field)
    if output is None and field == "eval_augment":
      raise ConfigError(f"config.eval_augment={spec!r} is invalid: must give "
                        "a fixed image size (end it with resize or "
                        "center_crop)")
    if output is not None and output != (size, size):
      raise ConfigError(
          f"config.image_size={size} but config.{field}={spec!r} makes "
          f"{output[0]}x{output[1]} images: set image_size to the views' "
          "size (the checkpoint keeps it for load_encoder and export), or "
          "change the spec")
  _check_extra_views(config)


def _check_extra_views(config):
  """`extra_views`: a tuple of specs, each of a fixed size (multi-crop's
  small views may differ from image_size), for a method that takes them."""
  extra = config_lib.value(config, "extra_views") or ()
  if isinstance(extra, str) or not isinstance(extra, (tuple, list)):
    raise ConfigError(f"config.extra_views={extra!r} is invalid: must be a "
                      "tuple of view specs")
  if extra and not methods.get_method(config.method).extra_views:
    raise ConfigError(
        f"config.extra_views holds {len(extra)} views but method "
        f"{config.method!r} takes none: leave it empty")
  for i, spec in enumerate(extra):
    field = f"extra_views[{i}]"
    view_spec.check_spec(spec, field)
    if view_spec.output_size(spec, field) is None:
      raise ConfigError(f"config.{field}={spec!r} is invalid: must give a "
                        "fixed image size (start it with random_resized_crop "
                        "or end it with resize)")


def validate_schedule(config: ml_collections.ConfigDict, *, num_examples: int,
                      steps_per_epoch: int, total_steps: int):
  """Checks what the train split's size decides: the warmup, counted in
  epochs of `steps_per_epoch` (the split over the global batch), must be
  shorter than the run. Runs before the optimizer is built, so that the
  message names the batch and the split, which set the step counts."""
  warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
  if warmup_steps >= total_steps:
    raise ConfigError(
        f"config.warmup_epochs={config.warmup_epochs} is invalid: it is "
        f"{warmup_steps} steps ({steps_per_epoch} per epoch: {num_examples} "
        f"examples / batch_size={config.batch_size}), not shorter than the "
        f"run's {total_steps} steps; lower warmup_epochs, raise batch_size "
        "or train longer")
