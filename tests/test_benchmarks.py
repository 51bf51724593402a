"""The benchmarks' logic: FLOP counts, MFU arithmetic, config enumeration,
and the GPU script's smoke mode run without TensorFlow, TFDS or clu (the GPU
machines have none). Nothing here is timed."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import compile_time  # noqa: E402  pylint: disable=g-import-not-at-top
import flops  # noqa: E402  pylint: disable=g-import-not-at-top
import harness  # noqa: E402  pylint: disable=g-import-not-at-top
import quality_data  # noqa: E402  pylint: disable=g-import-not-at-top

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
  config = harness.fit_to_devices(
      harness.load_config("moco_v2:imagenet"), 1)
  assert config.bn_groups_per_device == 8
  config = harness.fit_to_devices(
      harness.load_config("moco_v2:imagenet"), 8)
  assert config.bn_groups_per_device == 1
  # Only a shuffled key BN needs groups: MoCo v3's BN is global.
  config = harness.load_config("moco_v3:r50")
  assert harness.fit_to_devices(config.copy_and_resolve_references(),
                                1).to_dict() == config.to_dict()


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


def _run_without_tensorflow(script: str, *args: str):
  """Runs benchmarks/`script` in a fresh process where importing
  TensorFlow, TFDS or clu fails (the GPU machines have none)."""
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
       os.path.join(REPO, "benchmarks", script), *args],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def _table_rows(stdout: str, names) -> dict[str, list[str]]:
  return {line.split()[0]: line.split() for line in stdout.splitlines()
          if line.split() and line.split()[0] in names}


def test_gpu_script_smoke_runs_without_tensorflow():
  stdout = _run_without_tensorflow(
      "gpu_resnet50.py", "--smoke", "--image_size", "16", "--batch", "8",
      # A tiny peak keeps the printed MFU (one decimal) above 0.0% on a
      # slow or loaded CPU.
      "--steps", "1", "--warmup", "0", "--peak_tflops", "0.001",
      "--device_augment")
  rows = _table_rows(stdout, ("simclr", "moco_v2", "supervised",
                              "simclr_aug"))
  assert set(rows) == {"simclr", "moco_v2", "supervised", "simclr_aug"}, (
      stdout)
  for name, row in rows.items():
    step_ms, rate = float(row[2]), float(row[3])
    mfu = float(row[-2].rstrip("%"))
    assert step_ms > 0 and rate > 0 and mfu > 0, (name, row)
  # On CPU XLA's count covers the convolutions: MFU comes from it.
  assert rows["simclr"][-3] == "XLA", stdout
  assert "SimCLR views/s / supervised images/s" in stdout
  # The device ops' cost, measured beside the plain step (issue 15).
  assert re.search(r"device augmentation \(resize\(16\)\|flip_lr.*\): "
                   r"[-+]?[\d.]+ ms/step .*the ops alone [\d.]+ ms/step",
                   stdout), stdout


def test_gpu_feed_smoke_runs_without_tensorflow():
  stdout = _run_without_tensorflow("gpu_feed.py", "--smoke", "--batch", "8",
                                   "--steps", "1", "--reps", "1")
  rows = _table_rows(stdout, ("simclr", "simclr_aug"))
  assert set(rows) == {"simclr", "simclr_aug"}, stdout
  for name, row in rows.items():
    on_device, host_fed, ratio = (float(v) for v in row[1:4])
    assert on_device > 0 and host_fed > 0, (name, row)
    assert ratio == pytest.approx(host_fed / on_device, rel=2e-3)


def test_gpu_ablation_smoke_runs_without_tensorflow():
  import gpu_ablate  # pylint: disable=g-import-not-at-top
  stdout = _run_without_tensorflow("gpu_ablate.py", "--smoke",
                                   "--peak_tflops", "1")
  rows = _table_rows(stdout, gpu_ablate.VARIANTS)
  assert set(rows) == set(gpu_ablate.VARIANTS), stdout
  for name, row in rows.items():
    step_ms, images_per_s = float(row[1]), float(row[2])
    assert step_ms > 0 and images_per_s > 0, (name, row)
    assert images_per_s == pytest.approx(8 / (step_ms / 1e3), rel=2e-3)
  assert re.search(r"ceilings: bf16 matrix product [\d.]+ TFLOP/s, copy "
                   r"[\d.]+ TB/s", stdout), stdout
  assert "training BatchNorm's share of the step" in stdout
  per_element = re.search(r"bytes per conv-output element \(XLA's count\): "
                          r"([\d.]+) \(minimum 16\)", stdout)
  assert per_element and float(per_element.group(1)) > 0, stdout


def test_ablation_variants_take_out_what_they_name():
  import gpu_ablate  # pylint: disable=g-import-not-at-top
  from contrastive_jax.models import resnet  # pylint: disable=g-import-not-at-top
  x = jnp.zeros((2, 16, 16, 3))
  encoder = models.create_encoder("tiny_resnet", cifar_stem=True)
  with_bn = jax.eval_shape(
      lambda: encoder.init(jax.random.PRNGKey(0), x, train=True))
  original = resnet.batch_norm
  with gpu_ablate._without_norm():
    without = jax.eval_shape(
        lambda: encoder.init(jax.random.PRNGKey(0), x, train=True))
  assert resnet.batch_norm is original
  assert "batch_stats" in with_bn and "batch_stats" not in without
  bn_params = [p for p in jax.tree_util.tree_flatten_with_path(
      with_bn["params"])[0] if "bn" in jax.tree_util.keystr(p[0])]
  assert bn_params and not [
      p for p in jax.tree_util.tree_flatten_with_path(without["params"])[0]
      if "bn" in jax.tree_util.keystr(p[0])]
  # Same convolutions either way.
  conv_shapes = lambda v: sorted(
      (jax.tree_util.keystr(p), l.shape)
      for p, l in jax.tree_util.tree_flatten_with_path(v["params"])[0]
      if "conv" in jax.tree_util.keystr(p))
  assert conv_shapes(with_bn) == conv_shapes(without)


def test_conv_outputs_are_the_batchnorm_inputs():
  # Every convolution feeds one BatchNorm: the elements the bound charges
  # for are exactly what the BatchNorms see.
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  assert flops.conv_output_elements("resnet50", image_size=224) == 11_113_984
  for name, size, cifar_stem in [("tiny_resnet", 16, True),
                                 ("resnet18", 32, False)]:
    encoder = models.create_encoder(name, cifar_stem=cifar_stem)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)

    def bn_outputs(x, encoder=encoder):
      v = encoder.init(jax.random.PRNGKey(0), x, train=True)
      _, state = encoder.apply(
          v, x, train=True, mutable=["batch_stats", "intermediates"],
          capture_intermediates=lambda m, _: isinstance(m, nn.BatchNorm))
      return state["intermediates"]

    leaves = jax.tree.leaves(jax.eval_shape(bn_outputs, x))
    assert leaves
    assert flops.conv_output_elements(
        name, image_size=size, cifar_stem=cifar_stem) == sum(
            int(np.prod(leaf.shape)) for leaf in leaves)


def test_step_bound_arithmetic_and_the_h200_figure():
  # The H200 ceilings measured on these machines (device KINDS.md): an
  # 8192^3 bf16 product at ~788 TFLOP/s, a copy at ~4.3 TB/s.
  bound = flops.training_step_bound(
      "resnet50", image_size=224, matmul_flops=788e12,
      copy_bytes_per_s=4.3e12, peak_flops=989e12)
  train_flops = 3 * 2 * flops.encoder_forward_macs("resnet50",
                                                   image_size=224)
  assert bound.conv_seconds == pytest.approx(train_flops / 788e12)
  assert bound.bn_seconds == pytest.approx(8 * 2 * 11_113_984 / 4.3e12)
  assert bound.images_per_second == pytest.approx(
      1 / (bound.conv_seconds + bound.bn_seconds))
  assert bound.mfu == pytest.approx(
      train_flops * bound.images_per_second / 989e12)
  # Even this best case is under the 35%.
  assert 0.33 < bound.mfu < 0.35
  # The command line's defaults are those ceilings.
  assert flops.main([]) == bound


def test_lars_is_optax_lars_bitwise():
  """The step-overhead fix (optim.scale_by_trust_ratio without safe_norm)
  changes no update and no state structure (checkpoints)."""
  import optax  # pylint: disable=g-import-not-at-top
  from contrastive_jax import optim, weight_decay  # pylint: disable=g-import-not-at-top
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
      0.3, weight_decay=1e-4, weight_decay_mask=weight_decay.decay_mask,
      trust_coefficient=1e-3, trust_ratio_mask=weight_decay.decay_mask,
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


def test_the_benchmark_batch_holds_every_view_at_its_size():
  """A multi-crop config's synthetic batch has its small views (96 px for
  BYOL's), not just the two global ones: compile_time times that step."""
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import harness  # pylint: disable=g-import-not-at-top
  from contrastive_jax.config import lib as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load("byol:multicrop")
  shapes = harness.batch_shapes(config)
  sizes = [shapes[f"view{i}"].shape[1:3] for i in range(1, 9)]
  assert sizes == [(224, 224)] * 2 + [(96, 96)] * 6
  assert set(shapes) == {f"view{i}" for i in range(1, 9)} | {"label"}


def test_quality_folder_written_twice_keeps_one_whole_copy(tmp_path):
  # Two benchmark runs started together both find the folder missing and
  # write it (a shared temporary folder once crashed the second).
  images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
  splits = {"train": (images, np.array([0, 1, 1]))}
  root = str(tmp_path / "digits")
  quality_data._write(root, splits)
  quality_data._write(root, {"train": (images[:1] + 1, np.array([0]))})
  assert sorted(os.listdir(tmp_path)) == ["digits"]
  assert sorted(os.listdir(os.path.join(root, "train", "1"))) == [
      "00001.png", "00002.png"]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  first = np.asarray(Image.open(os.path.join(root, "train", "0",
                                             "00000.png")))
  np.testing.assert_array_equal(first, images[0])
