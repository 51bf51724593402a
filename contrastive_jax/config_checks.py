"""Config validation, before anything touches the workdir or the devices.

Each check raises `ConfigError` with one line naming the field, the value and
what is allowed. Choices that belong to a component (model names, optimizer
names, augmentation ops) are validated by that component's factory, which
the loop builds before training starts.
"""

import numbers

import ml_collections

from contrastive_jax import methods
from contrastive_jax.errors import ConfigError


def _require(ok: bool, field: str, value, allowed: str):
  if not ok:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def _positive_number(config, field: str):
  value = config[field]
  _require(isinstance(value, numbers.Real) and not isinstance(value, bool)
           and value > 0, field, value, "must be a number > 0")


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
  for field in ("learning_rate", "temperature"):
    _positive_number(config, field)
  if config.num_train_steps == -1:
    _positive_number(config, "num_epochs")
  else:
    _require(isinstance(config.num_train_steps, int)
             and config.num_train_steps > 0, "num_train_steps",
             config.num_train_steps,
             "must be -1 (derive from num_epochs) or an integer > 0")
  limit = config.get("max_consecutive_nonfinite", 0)
  _require(isinstance(limit, int) and not isinstance(limit, bool)
           and limit >= 0, "max_consecutive_nonfinite", limit,
           "must be an integer >= 0")
  _require(config.warmup_epochs >= 0, "warmup_epochs", config.warmup_epochs,
           "must be >= 0")
  _require(config.weight_decay >= 0, "weight_decay", config.weight_decay,
           "must be >= 0")
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
  # The method's own fields (MoCo: queue size, BN groups).
  methods.get_method(config.method).validate_config(config,
                                                    num_devices=num_devices)
