"""Each method preempted and resumed in process ends bit-identical to a run
never interrupted: parameters, optimizer state (EMA targets included), BN
statistics, `extra` (MoCo's queue and pointer, the target networks' BN
statistics) and RNG. The subprocess SIGKILL/SIGTERM tests of the loop are
in test_resume.py (SimCLR); this checks what each method adds to the state.
"""

import jax
import numpy as np
import pytest

from contrastive_jax import preemption, train
from tests import (test_barlow_twins, test_byol, test_dino, test_moco,
                   test_moco_v3, test_simsiam)

NUM_STEPS = 6
COMMON = dict(num_train_steps=NUM_STEPS, warmup_epochs=0.0, preview_images=0,
              checkpoint_every_steps=100, log_every_steps=1,
              model="tiny_resnet", width_multiplier=1)
# Each method's tiny test config (8 px, batch 32); MoCo's without the probe
# so that its queue of 96 keys wraps around before the preemption.
CONFIGS = {
    "moco": lambda: test_moco.tiny_config(online_probe=False, **COMMON),
    "byol": lambda: test_byol.tiny_config(
        ema_momentum_schedule="cosine", **COMMON),
    "simsiam": lambda: test_simsiam.tiny_config(**COMMON),
    "moco_v3": lambda: test_moco_v3.tiny_config(
        ema_momentum_schedule="cosine", **COMMON),
    # VICReg runs the same joint-embedding step and state (methods/
    # joint_embedding.py) with another objective; Barlow Twins also has the
    # second parameter group's optimizer state: it stands for both.
    "barlow_twins": lambda: test_barlow_twins.tiny_config(**COMMON),
    # Local crops, the last layer frozen for the first 3 steps (0.07 of an
    # epoch of 44): the centre and the frozen-step counts must resume.
    "dino": lambda: test_dino.tiny_config(
        ema_momentum_schedule="cosine", freeze_last_layer=0.07,
        clip_grad=3.0, **COMMON),
}


@pytest.fixture(scope="module", autouse=True)
def fast_compiles(tmp_path_factory):
  """The three runs of a test compile the same programs: a persistent
  compilation cache lets the second and third load them; XLA with most
  optimisations off compiles the first in about half the time (both
  bit-exact run to run, which is all these tests compare)."""
  names = ("jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes",
           "jax_disable_most_optimizations")
  before = {n: jax.config.read(n) if n == names[3] else getattr(jax.config, n)
            for n in names}
  jax.config.update(names[0], str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update(names[1], 0.0)
  jax.config.update(names[2], 0)
  jax.config.update(names[3], True)
  yield
  for n, v in before.items():
    jax.config.update(n, v)


# The methods this module runs; test_method_resume_later.py runs the others
# (one module per pytest-xdist worker: two modules share the work).
HERE = ("byol", "moco", "simsiam")


@pytest.mark.parametrize("method", HERE)
def test_preempted_run_resumes_bit_identical(method, tmp_path, monkeypatch):
  check_resume(method, tmp_path, monkeypatch)


def check_resume(method, tmp_path, monkeypatch):
  """Preempted after step 3 and resumed, `method`'s tiny run ends bit for
  bit where the uninterrupted run does."""
  def config():
    c = CONFIGS[method]()
    c.knn.every_steps = 0
    assert c.method == method
    return c

  devices = jax.devices()[:2]
  whole = jax.device_get(train.train_and_evaluate(
      config(), str(tmp_path / "whole"), devices=devices))

  # Preempted after step 3 (MoCo's queue of 96 keys has wrapped around).
  with monkeypatch.context() as m:
    m.setattr(preemption.Preemption, "reached",
              lambda self, step: step == 3)
    stopped = train.train_and_evaluate(config(), str(tmp_path / "split"),
                                       devices=devices)
  assert int(stopped.step) == 3
  resumed = jax.device_get(train.train_and_evaluate(
      config(), str(tmp_path / "split"), devices=devices))
  assert int(resumed.step) == NUM_STEPS
  # A queue, or the target's BN statistics (DINO's: and its centre).
  if method not in ("simsiam", "barlow_twins"):
    assert set(whole.extra)
  paths = jax.tree_util.tree_flatten_with_path(whole)[0]
  assert len(paths) == len(jax.tree.leaves(resumed))
  for (path, want), got in zip(paths, jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want),
                                  err_msg=jax.tree_util.keystr(path))
