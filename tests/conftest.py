"""Test-wide setup: 8 fake CPU devices, set before anything imports jax."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA with most optimisations off, in this process and the runs it starts
# (as flax's imagenet train_test): the tests' tiny programs compile in about
# half the time, and every comparison is between runs under the same flag
# or against float64 references with float32 tolerances.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")

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


# The slowest modules (subprocess runs, multi-process jobs), started first:
# under `pytest -n 2 --dist loadfile` (the README's command) each module runs
# on one worker in collection order, so a slow module collected last would
# run alone at the end. Longest first keeps both workers busy.
_SLOWEST_FIRST = (
    "test_resume.py", "test_prepared_end_to_end.py", "test_reshard.py",
    "test_evaluation.py", "test_moco_train.py", "test_launch_multi_process.py",
    "test_guards.py", "test_checkpoint_faults.py",
    "test_checkpoint_disk_full.py", "test_main.py",
    "test_moco.py", "test_bad_input.py",
    "test_train.py", "test_benchmarks.py", "test_simclr_step.py",
    "test_preview.py", "test_method_resume.py",
    "test_method_resume_later.py", "test_dino.py", "test_export.py",
    "test_export_bad_input.py",
    "test_old_checkpoints.py", "test_export_onnx.py", "test_health.py",
    "test_barlow_twins.py", "test_vicreg.py",
    "test_moco_v3_vit.py", "test_device_ops.py", "test_vit_downstream.py",
    "test_fused_norm.py",
)


def pytest_collection_modifyitems(session, config, items):
  del session, config
  rank = {name: i for i, name in enumerate(_SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config):
  # pytest-xdist would reorder modules by their number of tests; keep ours.
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


@pytest.fixture(scope="module")
def optimized_xla():
  """Full XLA optimisation for a module whose numbers are compared across
  differently laid out programs (1 vs 8 devices, blocked vs plain loss)
  at tolerances set with it on: `pytestmark = usefixtures(...)`."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
