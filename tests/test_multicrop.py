"""N views: the stream with more views (multi-crop's small ones), its first
two views unchanged, the preview of every view, the checks, and BYOL's
multi-crop loss and step."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive_jax import losses, method_steps
from contrastive_jax.config import checks as config_checks
from contrastive_jax.config import lib as config_lib
from contrastive_jax import parallel, preview
from contrastive_jax.data import sources, view_spec
from contrastive_jax.errors import ConfigError
from tests import test_byol
from tests.test_pipeline import SPEC, _pretrain, _take

SMALL = 'random_resized_crop(8, area=(0.05, 0.5))|flip_lr|grayscale(p=0.2)'


def test_two_view_stream_is_what_it_was_before_n_views():
  """Sums of the first two batches of the digits stream at seed 0, written
  by the two-view pipeline before N views existed (2026-12-01): any change
  to the keys of views 1 and 2 moves them."""
  batches = _take(_pretrain(seed=0), 2)
  sums = {k: float(np.stack([b[k] for b in batches]).astype(np.float64).sum())
          for k in ('view1', 'view2', 'label')}
  assert sums['label'] == 64.0
  assert sums['view1'] == pytest.approx(4379.795898250872, rel=1e-6)
  assert sums['view2'] == pytest.approx(5076.69776483325, rel=1e-6)


def test_more_views_leave_the_first_two_bit_identical():
  two = _take(_pretrain(seed=0), 2)
  four = _take(_pretrain(seed=0, view_specs=(SPEC, SPEC, SMALL, SMALL)), 2)
  for a, b in zip(two, four):
    for k in ('view1', 'view2', 'label'):
      np.testing.assert_array_equal(a[k], b[k])
    assert b['view3'].shape == b['view4'].shape == (8, 8, 8, 3)
    assert not np.array_equal(b['view3'], b['view4'])  # own keys
    assert 0 <= b['view3'].min() and b['view3'].max() <= 1


def test_training_views_and_preview_show_every_view():
  c = config_lib.load('byol:digits')
  c.extra_views = (SMALL,) * 3
  fields = [f for f, _ in view_spec.training_views(c, 2, extra_views=True)]
  assert fields == ['view_augment', 'view_augment_2', 'extra_views[0]',
                    'extra_views[1]', 'extra_views[2]']
  assert len(view_spec.training_views(c, 2)) == 2
  rows = preview.view_rows(c, num_images=2, num_pairs=2,
                           source=sources.open_source('digits', 'train'))
  # The original, then 2 groups of 5 views, each fitted to image_size.
  assert [len(r) for r in rows] == [11, 11]
  assert all(img.shape == (16, 16, 3) for img in rows[0])


def test_extra_views_need_a_method_that_takes_them():
  c = config_lib.load('simclr:digits')
  c.extra_views = ('resize(8)',)
  with pytest.raises(ConfigError, match="method 'simclr' takes none"):
    config_checks.validate(c, num_devices=1, num_processes=1)


def test_an_extra_view_needs_a_fixed_size():
  c = config_lib.load('byol:digits')
  c.extra_views = ('flip_lr',)
  with pytest.raises(ConfigError, match=r'extra_views\[0\].*fixed image size'):
    config_checks.validate(c, num_devices=1, num_processes=1)


# ------------------------------------------------------------ BYOL --

def test_multicrop_loss_matches_the_float64_pair_sum():
  rng = np.random.default_rng(0)
  ps = [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(4)]
  zs = [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(2)]

  def cos(a, b):
    a, b = (np.asarray(x, np.float64) for x in (a, b))
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) *
                                np.linalg.norm(b, axis=-1))

  want = sum(np.mean(2 - 2 * cos(p, z)) for t, z in enumerate(zs)
             for v, p in enumerate(ps) if v != t)
  got = losses.byol_multicrop_loss(ps, zs)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Two views: BYOL's loss.
  np.testing.assert_allclose(
      losses.byol_multicrop_loss(ps[:2], zs),
      losses.byol_loss(ps[0], ps[1], zs[0], zs[1]), rtol=1e-6)
  grads = jax.grad(lambda z: losses.byol_multicrop_loss(ps, [z, zs[1]]))(
      jnp.asarray(zs[0]))
  assert not np.any(grads)  # targets: stop-gradient


def test_byol_step_with_small_views_is_the_formula_on_its_outputs():
  c = test_byol.tiny_config()
  c.extra_views = ('resize(4)', 'resize(4)')
  config_checks.validate(c, num_devices=1, num_processes=1)
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  built = method_steps.build(c, mesh, steps_per_epoch=10, total_steps=100,
                             guard=False)
  rng = np.random.default_rng(1)
  batch = {f'view{v}': rng.uniform(size=(8, s, s, 3)).astype(np.float32)
           for v, s in zip(range(1, 5), (8, 8, 4, 4))}
  batch['label'] = np.zeros((8,), np.int32)
  with jax.set_mesh(mesh):
    state = built.init(jax.random.PRNGKey(0))
    new_state, metrics = built.train_step(
        state, parallel.global_batch(batch, mesh))
  assert np.isfinite(float(metrics['loss']))
  # 2 targets x 3 other views, each term in [0, 4]: more than 2 views' 8.
  assert 0 < float(metrics['loss']) <= 24
  assert int(new_state.step) == 1
