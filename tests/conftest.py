"""Test-wide setup: 8 fake CPU devices, set before anything imports jax."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

# Tests compare against float64 NumPy references.
jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prepared_tfds(tmp_path_factory):
  """(data_dir, {'train', 'test': images}): real TFDS datasets in every
  format and encoding (tests/prepared_data.py), written once per session."""
  from tests import prepared_data  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return data_dir, prepared_data.write_all(data_dir)
