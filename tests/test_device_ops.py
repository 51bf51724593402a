"""Size-keeping augmentations on the accelerator (data/device_ops.py,
data/device_augment.py): each op equals its TF host op for the same
uniforms, a row never depends on the rest of its batch, and a stream
augmented in the train step equals the host's stream."""

import inspect
import itertools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import PartitionSpec as P

from contrastive_jax import method_steps, parallel
from contrastive_jax.data import (augment, device_augment, device_ops,
                                  pipeline, sources)
from contrastive_jax.errors import ConfigError
from tests import test_simclr_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Float rounding: XLA on the host and on the device may order and fuse
# the same float32 arithmetic differently.
ATOL = 2e-5

# The tails of the recipes' views (configs/*.py), after a crop to 32 px
# (blur radius 1), and one with every op and a wider blur.
TAILS = {
    'simclr': ("flip_lr(p=0.5)|color_jitter(1.0, p=0.8, impl='simclr_v1')|"
               'grayscale(p=0.2)|'
               'gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1)'),
    'moco_v2': ('color_jitter(1.0, p=0.8, brightness=0.4, contrast=0.4, '
                "saturation=0.4, hue=0.1, impl='torchvision')|grayscale(p=0.2)|"
                'gaussian_blur(p=0.5, sigma=(0.1, 2.0), kernel_fraction=0.1)|'
                'flip_lr(p=0.5)'),
    'byol_2': ('flip_lr(p=0.5)|color_jitter(1.0, p=0.8, brightness=0.4, '
               "contrast=0.4, saturation=0.2, hue=0.1, impl='simclr_v1')|"
               'grayscale(p=0.2)|'
               'gaussian_blur(p=0.1, sigma=(0.1, 2.0), kernel_fraction=0.1)|'
               'solarize(p=0.2, threshold=0.5)'),
    'every_op': ('flip_lr|color_jitter(0.8, p=0.8)|grayscale(p=0.3)|'
                 'gaussian_blur(p=0.5, kernel_fraction=0.2)|solarize(p=0.4)'),
}


def _images(count, height, width, seed=0):
  """Uniform pixels, with grey, saturated and tied-channel ones (the hue
  and saturation formulas' special cases) in the first image."""
  images = np.random.default_rng(seed).uniform(
      size=(count, height, width, 3)).astype(np.float32)
  images[0, 0, :6] = [[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                      [1.0, 1.0, 1.0], [0.2, 0.7, 0.7], [0.9, 0.9, 0.1]]
  return images


def _uniforms(count, width, seed=1):
  return np.random.default_rng(seed).uniform(
      size=(count, width)).astype(np.float32)


def _host_and_device(name, kwargs, shape, seed=0):
  """(host output, device output, images) of op `name` for the same
  random images and uniforms."""
  host = augment.OPS[name](**kwargs)
  device = device_augment.OPS[name](**kwargs)
  assert device.num_uniforms == host.num_uniforms
  images = _images(*shape, seed=seed)
  uniforms = _uniforms(shape[0], host.num_uniforms, seed=seed + 1)
  want = host.apply(tf.constant(images), tf.constant(uniforms)).numpy()
  got = np.asarray(jax.jit(device.apply)(images, uniforms))
  return want, got, images


def _changed(out, images):
  return [not np.array_equal(o, i) for o, i in zip(out, images)]


def test_device_ops_and_the_step_builder_import_no_tensorflow():
  code = ('import sys\n'
          'for name in ("tensorflow", "tensorflow_datasets", "clu"):\n'
          '  sys.modules[name] = None\n'
          'from contrastive_jax.data import device_augment\n'
          'from contrastive_jax import method_steps\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                       capture_output=True, text=True, check=False,
                       env=dict(os.environ, PYTHONPATH=REPO))
  assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize('name,kwargs', [
    ('flip_lr', dict(p=0.5)), ('flip_lr', dict(p=1.0)), ('flip_lr', dict(p=0)),
    ('grayscale', dict(p=0.5)), ('grayscale', dict(p=1.0)),
    ('grayscale', dict(p=0)),
    ('solarize', dict(p=0.5, threshold=0.3)), ('solarize', dict(p=1.0)),
    ('solarize', dict(p=0.0)),
])
def test_flip_grayscale_solarize_equal_the_host_ops(name, kwargs):
  want, got, images = _host_and_device(name, kwargs, (12, 20, 28))
  np.testing.assert_allclose(got, want, atol=1e-6)
  # The coin falls both ways (or, at p = 0 and 1, always one way).
  changed = _changed(want, images)
  assert changed == _changed(got, images)
  assert any(changed) == (kwargs['p'] > 0)
  assert all(changed) == (kwargs['p'] == 1)


@pytest.mark.parametrize('shape,kwargs', [
    ((6, 16, 16), dict(p=0.5)),   # radius 0: the identity
    ((6, 19, 30), dict(p=1.0)),   # int(1.9) = 1: still the identity
    ((8, 24, 24), dict(p=0.5)),   # radius 1
    ((8, 40, 24), dict(p=0.5, sigma=(1.5, 1.5))),  # the shorter side: 1
    ((8, 40, 40), dict(p=0.5, sigma=(0.1, 2.0))),  # radius 2
    ((6, 36, 36), dict(p=1.0, sigma=(0.5, 3.0), kernel_fraction=0.3)),  # 5
    ((4, 24, 24), dict(p=0.0)),
])
def test_blur_equals_the_host_blur(shape, kwargs):
  want, got, images = _host_and_device('gaussian_blur', kwargs, shape)
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert _changed(got, images) == _changed(want, images)
  radius = device_ops.blur_radius(shape[1], shape[2],
                                  kwargs.get('kernel_fraction', 0.1))
  assert any(_changed(got, images)) == (radius > 0 and kwargs['p'] > 0)


@pytest.mark.parametrize('impl', ['simclr_v1', 'simclr_v2', 'torchvision'])
def test_color_jitter_equals_the_host_jitter(impl):
  cases = [dict(strength=1.0, p=0.8),  # A random order per example.
           dict(strength=0.5, p=1.0, random_order=False),
           dict(strength=1.0, p=0.0)]
  if impl == 'simclr_v1':  # Three ops (the tails cover torchvision's).
    cases.append(dict(brightness=0.4, contrast=0, saturation=0.3, hue=0.1,
                      p=0.6))
  for kwargs in cases:
    want, got, images = _host_and_device(
        'color_jitter', dict(kwargs, impl=impl), (12, 20, 24))
    np.testing.assert_allclose(got, want, atol=ATOL, err_msg=str(kwargs))
    assert _changed(got, images) == _changed(want, images)
    assert any(_changed(got, images)) == (kwargs['p'] > 0)


# SimCLR's and BYOL's tails: in the pipeline test below.
@pytest.mark.parametrize('tail', ['moco_v2', 'every_op'])
def test_recipe_tails_equal_the_host_views(tail):
  spec = f'resize(32)|{TAILS[tail]}'
  host, device = augment.build_view(spec), device_augment.device_view(spec)
  assert device.num_uniforms == host.num_uniforms
  images = _images(12, 32, 32, seed=2)
  uniforms = _uniforms(12, host.num_uniforms, seed=3)
  want = host.finish(tf.constant(images), tf.constant(uniforms)).numpy()
  got = np.asarray(jax.jit(device)(images, uniforms))
  np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.parametrize('spec,tail', [
    ('', ''), ('resize(8)', ''), ('flip_lr|grayscale', 'flip_lr|grayscale'),
    ('flip_lr | random_resized_crop(16) | grayscale(p=0.5)|solarize',
     'grayscale(p=0.5)|solarize'),
    ('center_crop(8)|flip_lr|resize(4)|color_jitter(0.5)',
     'color_jitter(0.5)'),
])
def test_the_device_view_is_the_host_views_size_keeping_tail(spec, tail):
  assert device_augment.size_keeping_tail(spec) == tail
  assert (device_augment.device_view(spec).num_uniforms ==
          augment.build_view(spec).num_uniforms ==
          device_augment.device_view(tail).num_uniforms)


def test_device_ops_have_the_host_ops_signatures():
  for name, factory in device_augment.OPS.items():
    assert inspect.signature(factory) == inspect.signature(augment.OPS[name])


@pytest.mark.parametrize('spec', [
    'resize(8)|flip_lr(p=2)', 'flip_lr(q=0.5)', "color_jitter(impl='x')",
    'color_jitter(hue=0.6)', 'color_jitter(brightness=-1)',
    'gaussian_blur(sigma=(0, 1))', 'gaussian_blur(kernel_fraction=1)',
    "solarize(threshold='a')", 'resize(8)|nope', 'flip_lr|',
])
def test_bad_arguments_raise_the_host_errors(spec):
  with pytest.raises(ConfigError) as host:
    augment.build_view(spec, 'view_augment_2')
  with pytest.raises(ConfigError) as device:
    device_augment.device_view(spec, 'view_augment_2')
  assert str(device.value) == str(host.value)


@pytest.fixture
def xla_optimized():
  """XLA's optimisations on for one test (conftest's optimized_xla keeps
  them on for the rest of the module)."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def test_a_row_does_not_depend_on_its_batch(xla_optimized):
  # With XLA's optimisations on, as in real runs. In one compiled program
  # (and for other batch sizes) a row is the same bits whatever else is in
  # the batch. Across device counts, to float rounding only: XLA contracts
  # a * b + c into an FMA where its fusion puts both in one kernel, and the
  # program partitioned for 8 devices fuses (and so rounds) a little
  # differently from the 1-device one.
  del xla_optimized
  augment_batch = device_augment.batch_augmenter(
      [f'resize(24)|{TAILS["every_op"]}', f'resize(24)|{TAILS["simclr"]}'])
  batch = {'label': np.arange(16, dtype=np.int32)}
  for i, count in enumerate(augment_batch.num_uniforms):
    batch[f'view{i + 1}'] = _images(16, 24, 24, seed=4 + i)
    batch[f'uniforms{i + 1}'] = _uniforms(16, count, seed=6 + i)
  run = jax.jit(augment_batch)
  one = jax.device_get(run(batch))
  assert set(one) == {'view1', 'view2', 'label'}
  perm = np.random.default_rng(8).permutation(16)
  permuted = jax.device_get(run({k: v[perm] for k, v in batch.items()}))
  part = jax.device_get(run({k: v[5:8] for k, v in batch.items()}))
  mesh = parallel.make_data_mesh(jax.devices()[:8])
  sharded = jax.jit(jax.shard_map(augment_batch, mesh=mesh,
                                  in_specs=P(parallel.DATA_AXIS),
                                  out_specs=P(parallel.DATA_AXIS)))
  with jax.set_mesh(mesh):
    eight = jax.device_get(sharded(parallel.global_batch(batch, mesh)))
  for key in one:
    np.testing.assert_array_equal(permuted[key], one[key][perm])
    np.testing.assert_array_equal(part[key], one[key][5:8])
    np.testing.assert_allclose(eight[key], one[key], rtol=0, atol=1e-6)
  assert len({one['view1'][i].tobytes() for i in range(16)}) == 16


# Two views, as BYOL's: every op, a blur that acts at 32 px (radius 1), and
# the second with its own tail.
PIPELINE_SPECS = (
    f'random_resized_crop(32, area=(0.25, 1.0))|{TAILS["simclr"]}',
    f'random_resized_crop(32, area=(0.25, 1.0))|{TAILS["byol_2"]}')


def _stream(augment_on_device, split='train[:64]', start_step=0, count=3):
  make = pipeline.pretrain_stream(
      source=sources.open_source('digits', split), local_batch_size=16,
      view_specs=PIPELINE_SPECS, seed=5, process_index=0, process_count=1,
      augment_on_device=augment_on_device)
  return list(itertools.islice(
      pipeline.as_numpy_iterator(make(start_step)), count))


# Run in a fresh process whose XLA targets SSE4.2, a CPU without fused
# multiply-add: with FMA, XLA:CPU contracts a * b + c wherever its fusion
# puts both in one kernel, and the 8-device program fuses (so rounds) a
# little differently from the 1-device one (<= 1e-6 above). Without it
# nothing is left to differ: the bits are the same.
_ONE_VS_EIGHT = r"""
import jax, numpy as np
from jax.sharding import PartitionSpec as P
from contrastive_jax import parallel
from contrastive_jax.data import device_augment
from tests.test_device_ops import TAILS, _images, _uniforms
augment_batch = device_augment.batch_augmenter(
    [f'resize(24)|{TAILS[name]}' for name in TAILS])
batch = {'label': np.arange(32, dtype=np.int32)}
for i, count in enumerate(augment_batch.num_uniforms):
  batch[f'view{i + 1}'] = _images(32, 24, 24, seed=4 + i)
  batch[f'uniforms{i + 1}'] = _uniforms(32, count, seed=8 + i)
one = jax.device_get(jax.jit(augment_batch)(batch))
mesh = parallel.make_data_mesh(jax.devices()[:8])
sharded = jax.jit(jax.shard_map(augment_batch, mesh=mesh,
                                in_specs=P('data'), out_specs=P('data')))
with jax.set_mesh(mesh):
  eight = jax.device_get(sharded(parallel.global_batch(batch, mesh)))
for key in one:
  np.testing.assert_array_equal(eight[key], one[key], err_msg=key)
print('bit-identical', sorted(one))
"""


def test_one_and_eight_devices_give_the_same_bits_without_fma():
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
      '--xla_force_host_platform_device_count=8 --xla_cpu_max_isa=SSE4_2'))
  env.pop('JAX_DISABLE_MOST_OPTIMIZATIONS', None)  # As in real runs.
  done = subprocess.run([sys.executable, '-c', _ONE_VS_EIGHT], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'bit-identical' in done.stdout


def test_device_augmented_stream_equals_the_host_stream():
  host, crops = _stream(False), _stream(True)
  traces = []
  augment_batch = device_augment.batch_augmenter(PIPELINE_SPECS)

  @jax.jit
  def run(batch):
    traces.append(batch['view1'].shape)
    return augment_batch(batch)

  for want, batch in zip(host, crops):
    assert set(batch) == {'view1', 'view2', 'uniforms1', 'uniforms2',
                          'label'}
    assert batch['view1'].dtype == batch['uniforms1'].dtype == np.float32
    assert batch['uniforms2'].shape == (16, augment.build_view(
        PIPELINE_SPECS[1]).num_uniforms)
    got = jax.device_get(run(batch))
    assert set(got) == set(want)
    np.testing.assert_array_equal(got['label'], want['label'])
    for key in ('view1', 'view2'):
      np.testing.assert_allclose(got[key], want[key], atol=ATOL)
      assert not np.allclose(batch[key], want[key])  # Augmented on device.
  # Compiled once for the view shape: the uniforms are data, and nothing
  # in the ops branches on their values in Python.
  assert traces == [(16, 32, 32, 3)]


def test_device_augmented_stream_resumes_at_step_k():
  # 40 examples, batch 16: 2 steps per epoch; 5 steps cross two epochs.
  whole = _stream(True, 'train[:40]', count=5)
  for k in (2, 3):
    for want, got in zip(whole[k:], _stream(True, 'train[:40]', k, 5 - k)):
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def _tiny_simclr(augment_on_device):
  """tests/test_simclr_step.py's tiny SimCLR (digits recipe at 8 px, SGD at
  a constant rate) with a view that has every kind of tail op."""
  c = test_simclr_step.tiny_config()
  c.view_augment = ('random_resized_crop(8, area=(0.25, 1.0))|flip_lr|'
                    "color_jitter(0.5, p=0.8, impl='simclr_v1')|"
                    'grayscale(p=0.2)|solarize(p=0.3)')
  c.augment_on_device = augment_on_device
  return c


def test_the_step_with_device_augmentation_equals_the_host_augmented_step():
  # 2 devices: the augment runs per device, inside shard_map. Both steps
  # start from one initial state (the same model), each from its own copy
  # (the steps donate it).
  mesh = parallel.make_data_mesh(jax.devices()[:2])
  results, steps, batches, start = [], [], [], None
  for on_device in (False, True):
    config = _tiny_simclr(on_device)
    built = method_steps.build(config, mesh, steps_per_epoch=10,
                               total_steps=100)
    assert (built.augment is not None) == on_device
    make = pipeline.pretrain_stream(
        source=sources.open_source('digits', 'train[:32]'),
        local_batch_size=16, view_specs=(config.view_augment,) * 2, seed=0,
        process_index=0, process_count=1, augment_on_device=on_device)
    batch = next(pipeline.as_numpy_iterator(make(0)))
    with jax.set_mesh(mesh):
      if start is None:
        start = jax.device_get(built.init(jax.random.PRNGKey(0)))
      state = jax.device_put(start, parallel.replicated(mesh))
      batch = parallel.global_batch(batch, mesh)
      state, metrics = built.train_step(state, batch)
      results.append(jax.device_get((state.params, metrics)))
    steps.append(built.train_step)
    batches.append(batch)
  (host_params, host_metrics), (params, metrics) = results
  assert metrics['nonfinite_steps'] == 0
  for name in ('loss', 'grad_norm'):
    np.testing.assert_allclose(metrics[name], host_metrics[name], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(host_params), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4,
                               atol=1e-6)
  # A stream and a step that disagree fail when traced, not train on the
  # bare crops (or on nothing).
  with jax.set_mesh(mesh):
    for step, batch, match in ((steps[0], batches[1], 'holds uniforms'),
                               (steps[1], batches[0], 'no uniforms')):
      with pytest.raises(ValueError, match=match):
        step(jax.device_put(start, parallel.replicated(mesh)), batch)
