"""Which config fields a resumed run may change.

A workdir holds one experiment: its checkpoints store the config that made
them, and a rerun in the same workdir continues that experiment. A rerun
whose config defines another experiment (another batch size, model, method,
dataset or pretrained encoder) must not continue it: the state would not
fit, or worse, would fit and be reported under the new name. Only the fields
in MAY_CHANGE may differ: how long the run is, and how it is logged,
checkpointed, monitored and where its data is read from. The device count is
not a config field; a checkpoint restores onto any number of devices.

Both configs are compared after `train.fit_config_to_data` (the stored one
holds the fitted `num_classes`, not -1).
"""

import os
from typing import Any, NamedTuple

from contrastive_jax import methods
from contrastive_jax.config import defaults as config_defaults

# Dotted names; a parent ("knn") would cover all of its children.
MAY_CHANGE = (
    # Training longer (the schedule is recomputed for the new length).
    "num_train_steps", "num_epochs",
    # Bookkeeping: logging, checkpointing, profiling, the step-0 preview.
    "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "async_checkpointing", "profile_steps", "profile_start_step",
    "preview_images",
    # How often the kNN monitor runs (not what it computes), and the
    # evaluation batch (every example is evaluated alone).
    "knn.every_steps", "eval_batch_size",
    # A classifier's kNN score of its encoder at the end: no step reads it.
    "knn_eval",
    # The label-free monitors and what a collapse does.
    "health.every_steps", "health.num_examples", "stop_on_collapse",
    # Where the data is read from and how damage in it is tolerated.
    "data_dir", "download", "data.allow_changed_files",
    "data.max_bad_fraction",
    "max_consecutive_nonfinite",
    # How the step computes the same thing: the BatchNorm code, and where
    # the size-keeping augmentations run (same variables and randomness;
    # the numbers agree to float32 rounding, not bit for bit).
    "bn_impl", "augment_on_device",
)

_UNSET = object()


class Change(NamedTuple):
  field: str   # dotted name
  stored: Any  # the checkpoint's value, or _UNSET
  new: Any     # this run's value, or _UNSET


def default_values(method: str) -> dict[str, Any]:
  """What a field that a stored config lacks (one saved by an older
  version) is taken to hold: what the run that stored it did, which is its
  one default (`defaults.field_default`: base_config()'s, or
  OPTIONAL_FIELDS', what code reading a config without the field uses),
  and for the other fields only `method`'s family of configs has, their
  value in that family's base config (the Method record's `base_config`,
  read by `methods.base_config`). A classifier's config from before
  `knn_eval` existed did no kNN scoring: False, not its base's True."""
  values = config_defaults.dotted(methods.base_config(method).to_dict())
  # The one default wins where the family's base has another value.
  values.update(config_defaults.OPTIONAL_FIELDS)
  values.update(
      config_defaults.dotted(config_defaults.base_config().to_dict()))
  return values


def _may_change(field: str) -> bool:
  return any(field == name or field.startswith(name + ".")
             for name in MAY_CHANGE)


def _normalise(field: str, value: Any) -> Any:
  """JSON turns tuples into lists; a path may be spelt with a trailing
  slash."""
  if isinstance(value, (list, tuple)):
    return [_normalise(field, v) for v in value]
  if (field == "pretrained" and isinstance(value, str) and value
      and "://" not in value):
    return os.path.normpath(value)
  return value


def changed_fields(stored: dict, new: dict,
                   defaults: dict | None = None) -> list[Change]:
  """The fields of `new` that differ from `stored` and may not change on
  resume (MAY_CHANGE), sorted by name.

  A field only one side has (a config saved by an older or newer version)
  counts as changed unless that side holds its default (`defaults`,
  dotted names; by default `default_values` of the new config's method).
  """
  stored = config_defaults.dotted(stored)
  new = config_defaults.dotted(new)
  if defaults is None:
    defaults = default_values(new.get("method", stored.get("method", "")))
  changes = []
  for field in sorted(set(stored) | set(new)):
    if _may_change(field):
      continue
    old_value = _normalise(field, stored.get(field, _UNSET))
    new_value = _normalise(field, new.get(field, _UNSET))
    if old_value is _UNSET or new_value is _UNSET:
      present = new_value if old_value is _UNSET else old_value
      if _same(present, _normalise(field, defaults.get(field, _UNSET))):
        continue
    elif _same(old_value, new_value):
      continue
    changes.append(Change(field, stored.get(field, _UNSET),
                          new.get(field, _UNSET)))
  return changes


def _same(a: Any, b: Any) -> bool:
  # 100 and 100.0 (an override's literal) are the same; True and 1 are not.
  return (a is not _UNSET and b is not _UNSET and a == b
          and isinstance(a, bool) == isinstance(b, bool))


def _show(value: Any) -> str:
  return "(unset)" if value is _UNSET else repr(value)


def describe(changes: list[Change]) -> str:
  """"batch_size 256 -> 128, model 'resnet18' -> 'tiny_resnet'"."""
  return ", ".join(f"{c.field} {_show(c.stored)} -> {_show(c.new)}"
                   for c in changes)
