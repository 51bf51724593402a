"""config_lib.load: the configs/ files by name or path, as --config."""

import os

import pytest

from contrastive_jax.config import lib as config_lib


def test_load_by_name_by_path_and_default_variant():
  by_name = config_lib.load("simclr:digits")
  by_path = config_lib.load(os.path.join(config_lib.CONFIG_DIR,
                                         "simclr.py") + ":digits")
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.dataset == "digits"
  assert config_lib.load("simclr").to_dict() == config_lib.load(
      "simclr:cifar10").to_dict()
  assert {"simclr", "moco_v1", "moco_v2", "linear_eval",
          "finetune"} <= set(config_lib.config_names())


def test_a_missing_file_says_which():
  with pytest.raises(FileNotFoundError, match="no config file .*nothere.py"):
    config_lib.load("nothere:digits")


def test_every_method_reads_its_own_defaults_and_temperature():
  """One default per field (base_config's, by `field_default`); a field
  that an older config lacks is taken at its method family's default, not
  MoCo's for every method; `temperature` is checked only where a method
  reads it."""
  from contrastive_jax import resume_check  # pylint: disable=g-import-not-at-top
  from contrastive_jax.config import checks, defaults  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  assert defaults.field_default("max_consecutive_nonfinite") == 10
  assert "queue_size" in resume_check.default_values("moco")
  byol = resume_check.default_values("byol")
  assert "queue_size" not in byol
  assert byol["input_norm"] == defaults.base_config().input_norm
  for name, reads in (("simclr", True), ("moco_v2", True), ("moco_v3", True),
                      ("byol", False), ("simsiam", False)):
    config = config_lib.load(f"{name}:digits")
    config.temperature = 0.0
    if reads:
      with pytest.raises(ConfigError, match="config.temperature=0.0"):
        checks.validate(config, num_devices=1, num_processes=1)
    else:
      checks.validate(config, num_devices=1, num_processes=1)
