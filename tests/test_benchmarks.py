"""The benchmarks' logic: FLOP counts, MFU arithmetic, config enumeration,
and the GPU script's smoke mode run without TensorFlow, TFDS or clu (the GPU
machines have none). Nothing here is timed."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import compile_time  # noqa: E402  pylint: disable=g-import-not-at-top
import flops  # noqa: E402  pylint: disable=g-import-not-at-top
import harness  # noqa: E402  pylint: disable=g-import-not-at-top

from contrastive_jax import models  # noqa: E402


def test_resnet50_analytic_count_is_the_literature_value():
  # 4.1 GMAC at 224 px (less the 2M of the classifier our encoder lacks).
  macs = flops.encoder_forward_macs("resnet50", image_size=224)
  assert macs == pytest.approx(4.09e9, rel=2e-3)
  assert flops.encoder_forward_macs("resnet18", image_size=224) == (
      pytest.approx(1.81e9, rel=3e-3))


@pytest.mark.parametrize("name,size,cifar_stem", [
    ("tiny_resnet", 16, True), ("tiny_resnet", 32, False)])
def test_analytic_count_matches_xla_cost_analysis(name, size, cifar_stem):
  encoder = models.create_encoder(name, cifar_stem=cifar_stem)
  x = jnp.zeros((2, size, size, 3))
  variables = jax.eval_shape(
      lambda: encoder.init(jax.random.PRNGKey(0), x, train=False))
  compiled = jax.jit(
      lambda v, x: encoder.apply(v, x, train=False)).lower(
          variables, x).compile()
  xla = harness.cost_flops(compiled)
  analytic = 2 * 2 * flops.encoder_forward_macs(
      name, image_size=size, cifar_stem=cifar_stem, exact=True)
  # XLA counts the convolutions' taps off the padding (as exact=True does)
  # plus BatchNorm and ReLU: a few percent more.
  assert 1.0 <= xla / analytic < 1.08


def test_mfu_flops_fall_back_to_analytic_where_xla_misses_convolutions():
  import gpu_resnet50  # pylint: disable=g-import-not-at-top
  assert gpu_resnet50._flops_for_mfu(1.02e12, 1e12) == (1.02e12, "XLA")
  # GPU: cuDNN convolutions are not in XLA's count.
  assert gpu_resnet50._flops_for_mfu(2e10, 1e12) == (1e12, "analytic")
  assert gpu_resnet50._flops_for_mfu(None, 1e12) == (1e12, "analytic")


def test_mfu_arithmetic_and_peaks():
  # Half the peak for 0.1 s is 0.05 s of peak FLOPs.
  assert flops.mfu(989e12 * 0.05, 0.1, 989e12) == pytest.approx(0.5)
  assert flops.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
  assert flops.peak_bf16_flops("NVIDIA H200") == 989e12
  assert flops.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert flops.peak_bf16_flops("TPU v4") == 275e12
  assert flops.peak_bf16_flops("cpu") is None


def test_every_config_variant_is_listed_and_loads():
  specs = compile_time.all_specs()
  assert {s.split(":")[0] for s in specs} == set(harness.config_files())
  for spec in specs:
    config = harness.load_config(spec)
    if config.method in ("linear_eval", "finetune"):
      assert config.pretrained == "random"
  defaults = compile_time.default_specs()
  assert set(defaults) <= set(specs)
  # One per distinct step: every method and model appears.
  assert {(harness.load_config(s).method, harness.load_config(s).model)
          for s in specs} == {(harness.load_config(s).method,
                               harness.load_config(s).model)
                              for s in defaults}


def test_one_device_moco_gets_bn_groups_to_shuffle():
  config = compile_time.fit_to_devices(
      harness.load_config("moco_v2:imagenet"), 1)
  assert config.bn_groups_per_device == 8
  config = compile_time.fit_to_devices(
      harness.load_config("moco_v2:imagenet"), 8)
  assert config.bn_groups_per_device == 1


def test_abstract_state_is_the_state_shape():
  config = harness.load_config("simclr:digits", batch_size=8)
  bench = harness.build(config, jax.sharding.Mesh(jax.devices()[:1],
                                                  ("data",)))
  state = bench.abstract_state()
  shapes = jax.eval_shape(bench.init, jax.random.PRNGKey(0))
  assert jax.tree.structure(state) == jax.tree.structure(shapes)
  assert set(bench.abstract_batch()) == {"view1", "view2", "label"}


_BLOCKED_RUN = """
import runpy, sys
for name in ("tensorflow", "tensorflow_datasets", "clu"):
  sys.modules[name] = None  # any import of them raises ImportError
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_gpu_script_smoke_runs_without_tensorflow():
  env = dict(os.environ)
  # One CPU device (conftest asks for 8 for this process only), and a
  # fast compile: the numbers only need to be there and positive.
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 env.get("XLA_FLAGS", "")).strip()
  env.pop("XLA_FLAGS")
  if flags:
    env["XLA_FLAGS"] = flags
  env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  out = subprocess.run(
      [sys.executable, "-c", _BLOCKED_RUN,
       os.path.join(REPO, "benchmarks", "gpu_resnet50.py"), "--smoke",
       "--image_size", "16", "--batch", "8", "--steps", "1", "--warmup",
       "0", "--peak_tflops", "1"],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()
          if line.split() and line.split()[0] in ("simclr", "moco_v2",
                                                  "supervised")}
  assert set(rows) == {"simclr", "moco_v2", "supervised"}, out.stdout
  for name, row in rows.items():
    step_ms, rate = float(row[2]), float(row[3])
    mfu = float(row[-2].rstrip("%"))
    assert step_ms > 0 and rate > 0 and mfu > 0, (name, row)
  # On CPU XLA's count covers the convolutions: MFU comes from it.
  assert rows["simclr"][-3] == "XLA", out.stdout
  assert "SimCLR views/s / supervised images/s" in out.stdout


def test_lars_is_optax_lars_bitwise():
  """The step-overhead fix (optim.scale_by_trust_ratio without safe_norm)
  changes no update and no state structure (checkpoints)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from contrastive_jax import optim  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  params = {"conv1": {"kernel": rng.standard_normal((3, 3, 4, 8))},
            "bn1": {"scale": rng.standard_normal(8),
                    "bias": rng.standard_normal(8)},
            "dense": {"kernel": rng.standard_normal((8, 5)),
                      "bias": rng.standard_normal(5)},
            "zero": {"kernel": np.zeros((4, 4))}}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  grads = jax.tree.map(lambda x: 0.1 * jnp.cos(x) + 0.01, params)
  grads["dense"]["kernel"] = jnp.zeros_like(grads["dense"]["kernel"])
  reference = optax.lars(
      0.3, weight_decay=1e-4, weight_decay_mask=optim.decay_mask,
      trust_coefficient=1e-3, trust_ratio_mask=optim.decay_mask,
      momentum=0.9)
  ours = optim.create_optimizer(name="lars", learning_rate=0.3,
                                weight_decay=1e-4, momentum=0.9)

  def run(tx):
    state, p = tx.init(params), params
    update = jax.jit(tx.update)
    for _ in range(3):
      updates, state = update(grads, state, p)
      p = optax.apply_updates(p, updates)
    return p, state

  expected, got = run(reference), run(ours)
  assert jax.tree.structure(expected) == jax.tree.structure(got)
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(e), np.asarray(g))
