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
