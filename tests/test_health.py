"""The label-free health monitors: the pure metrics against NumPy written
out the long way, the collapse rule, and the monitor in a real run on an
unlabelled folder and on a collapsed encoder."""

import json
import logging as std_logging
import os

import jax
import numpy as np
import pytest

from contrastive_jax import method_steps, parallel, train
from contrastive_jax.data import digits, sources
from contrastive_jax.evaluation import health, health_monitor
from contrastive_jax.errors import UserError
from contrastive_jax import methods
from tests.test_simclr_step import tiny_config


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("rank", [1, 3, 10])
def test_rankme_of_equal_singular_values_is_the_rank(rank):
  rng = np.random.default_rng(rank)
  u, _ = np.linalg.qr(rng.normal(size=(50, rank)))
  v, _ = np.linalg.qr(rng.normal(size=(20, rank)))
  features = 3.0 * u @ v.T  # rank `rank`, every singular value 3
  assert health.rankme(features) == pytest.approx(rank, rel=1e-4)


def test_rankme_is_the_entropy_of_the_normalised_spectrum():
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(40, 4)))
  v, _ = np.linalg.qr(rng.normal(size=(8, 4)))
  s = np.array([4.0, 2.0, 1.0, 1.0])
  # The 4 zero singular values of the 40x8 matrix count with their eps.
  p = np.concatenate([s / s.sum(), np.zeros(4)]) + 1e-7
  want = np.exp(-np.sum(p * np.log(p)))  # 3.3636...: between 1 and 4
  assert health.rankme(u @ np.diag(s) @ v.T) == pytest.approx(want, rel=1e-6)
  assert health.rankme(np.zeros((5, 3))) == 1.0


def test_alignment_uniformity_and_std_against_loops():
  rng = np.random.default_rng(1)
  z1, z2 = rng.normal(size=(12, 5)), rng.normal(size=(12, 5))
  u1, u2 = _unit(z1), _unit(z2)
  align = np.mean([np.sum((a - b) ** 2) for a, b in zip(u1, u2)])
  assert health.alignment(z1, z2) == pytest.approx(align, rel=1e-12)
  pairs = [np.exp(-2 * np.sum((u1[i] - u1[j]) ** 2))
           for i in range(12) for j in range(i + 1, 12)]
  assert health.uniformity(z1) == pytest.approx(np.log(np.mean(pairs)),
                                                rel=1e-9)
  std = np.mean([np.std(u1[:, k]) for k in range(5)])
  assert health.z_std(z1) == pytest.approx(std, rel=1e-12)
  values = health.metrics(z1, z1, z2)
  assert values["health/z_std_ratio"] == pytest.approx(std * np.sqrt(5))
  assert values["health/uniformity"] == pytest.approx(
      0.5 * (health.uniformity(z1) + health.uniformity(z2)))


def test_collapse_rule():
  rng = np.random.default_rng(2)
  spread = rng.normal(size=(256, 32))
  assert not health.collapsed(health.metrics(spread, spread, spread))
  point = np.ones((256, 32)) + 1e-4 * rng.normal(size=(256, 32))
  assert health.collapsed(health.metrics(point, point, point))
  # One direction, both signs: the std alone is large, the rank is 1.
  line = np.outer(np.sign(rng.normal(size=256)), rng.normal(size=32))
  values = health.metrics(line, line, line)
  assert values["health/z_std_ratio"] > 0.5 and health.collapsed(values)


def _monitor_config(**changes):
  c = tiny_config()
  c.health.num_examples = 64
  c.eval_batch_size = 32
  c.num_classes = 0
  c.online_probe = False
  for k, v in changes.items():
    c[k] = v
  return c


def _untrained(config):
  """A 2-device mesh and `config`'s method's initial state on it."""
  mesh = parallel.make_data_mesh(jax.devices()[:2])
  built = method_steps.build(config, mesh, steps_per_epoch=10, total_steps=10)
  with jax.set_mesh(mesh):
    return mesh, built.init(jax.random.PRNGKey(0))


def test_a_collapsed_encoder_warns_once_and_can_stop_the_run(caplog):
  config = _monitor_config()
  mesh, state = _untrained(config)
  method = methods.get_method("simclr")
  source = sources.from_config(config, "train")
  # Every weight zero: every image maps to the same h and z.
  dead = state.replace(params=jax.tree.map(np.zeros_like, state.params))
  monitor = health_monitor.HealthMonitor(config, method=method, mesh=mesh,
                                         source=source)
  fresh = monitor.run(state, 1)  # Untrained, yet more than one point.
  monitor = health_monitor.HealthMonitor(config, method=method, mesh=mesh,
                                         source=source)
  caplog.clear()
  with caplog.at_level(std_logging.WARNING):
    for step in (2, 3):
      values = monitor.run(dead, step)
      assert health.collapsed(values)
      assert values["health/z_std_ratio"] < 1e-3 < fresh[
          "health/z_std_ratio"]
      assert values["health/rankme_h"] < 1.01 < fresh["health/rankme_h"]
  warnings = [r for r in caplog.records if "collapsed" in r.getMessage()]
  assert len(warnings) == 1 and "step 2" in warnings[0].getMessage()
  stopping = health_monitor.HealthMonitor(
      _monitor_config(stop_on_collapse=True), method=method, mesh=mesh,
      source=source)
  with pytest.raises(health_monitor.CollapseError,
                     match="collapsed at step 4.*checkpoints are kept"):
    stopping.run(dead, 4)
  assert issubclass(health_monitor.CollapseError, UserError)


def test_projection_alone_decides_between_h_and_z():
  """`Method.projection` decides: None measures h as z too (on the
  encoder's variables: rankme_z is rankme_h, and h's numbers are the
  projecting monitor's), and a pretraining method with a projection but no
  projector_variables is refused when its record is made."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = _monitor_config()
  mesh, state = _untrained(config)
  method = methods.get_method("simclr")
  source = sources.from_config(config, "train")
  with_z = health_monitor.HealthMonitor(
      config, method=method, mesh=mesh, source=source).run(state, 1)
  h_only = health_monitor.HealthMonitor(
      config, method=dataclasses.replace(method, projection=None), mesh=mesh,
      source=source).run(state, 1)
  assert h_only["health/rankme_h"] == pytest.approx(
      with_z["health/rankme_h"], rel=1e-5)
  assert h_only["health/rankme_z"] == pytest.approx(
      h_only["health/rankme_h"], rel=1e-6)
  assert h_only["health/rankme_z"] != pytest.approx(
      with_z["health/rankme_z"], rel=1e-3)
  with pytest.raises(TypeError, match="projection needs projector_variables"):
    dataclasses.replace(method, projector_variables=None)
  assert dataclasses.replace(method, projector_variables=None,
                             projection=None).projection is None


def test_the_monitors_run_on_an_unlabelled_folder(tmp_path):
  """An unlabelled folder: no kNN, no probe, but every health number, at
  the monitor's cadence, in metrics.jsonl."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = tmp_path / "photos"
  root.mkdir()
  images = digits.load_digits_split("train")["image"][:96]
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0], mode="L").save(root / f"{i:03d}.png")
  c = tiny_config()
  c.dataset = f"folder:{root}"
  c.num_train_steps = 4
  c.knn.every_steps = 2
  c.health.num_examples = 48
  c.log_every_steps = 2
  c.async_checkpointing = False
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir, devices=jax.devices()[:2])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert not any("knn_accuracy" in r or "probe_accuracy" in r for r in rows)
  rows = [r for r in rows if "health/rankme_z" in r]
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    assert 1.0 <= r["health/rankme_h"] <= 32  # h is 32 wide here
    assert 1.0 <= r["health/rankme_z"] <= 32  # at most the 48 examples'
    assert 0 < r["health/z_std_ratio"] < 2 and r["health/alignment"] >= 0
    assert -4.0 <= r["health/uniformity"] <= 0


def test_dinos_monitor_measures_the_teachers_h_and_z():
  """DINO's `Method.projection`: h of the teacher's encoder and z its
  head's l2-normalised bottleneck (vision_transformer.py:287-291), checked
  against the head's MLP in NumPy (Dense, exact GELU, Dense, GELU, Dense,
  F.normalize); the monitor reports every number, z's included, and they
  are health.metrics of that h and z. No method name is asked for: the
  monitor calls the method's fields."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from scipy import special  # pylint: disable=g-import-not-at-top
  from contrastive_jax.methods import dino  # pylint: disable=g-import-not-at-top
  from tests.test_dino import tiny_config as dino_config  # pylint: disable=g-import-not-at-top
  config = dino_config()
  config.health.num_examples, config.eval_batch_size = 32, 16
  config.num_classes, config.online_probe = 0, False
  mesh, state = _untrained(config)
  variables = dino.METHOD.projector_variables(
      serialization.to_state_dict(jax.device_get(state)))
  images = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(
      np.float32)
  h, z = dino.METHOD.projection(config)(variables, images)
  x = np.asarray(h, np.float64)
  head = variables["params"]["head"]
  for i in (1, 2, 3):
    x = x @ head[f"dense{i}"]["kernel"] + head[f"dense{i}"]["bias"]
    if i < 3:
      x = 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
  want = x / np.linalg.norm(x, axis=-1, keepdims=True)
  assert z.shape == (4, config.head.bottleneck_dim)
  np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-6)
  monitor = health_monitor.HealthMonitor(
      config, method=dino.METHOD, mesh=mesh,
      source=sources.from_config(config, "train"))
  values = monitor.run(state, 1)
  assert set(values) == {f"health/{k}" for k in (
      "rankme_h", "rankme_z", "z_std", "z_std_ratio", "alignment",
      "uniformity")}
  views = monitor._slice  # pylint: disable=protected-access
  apply = dino.METHOD.projection(config)
  h1, z1 = apply(variables, views["view1"].astype(np.float32))
  _, z2 = apply(variables, views["view2"].astype(np.float32))
  want = health.metrics(np.asarray(h1), np.asarray(z1), np.asarray(z2))
  for k, v in want.items():
    assert values[k] == pytest.approx(v, rel=1e-3, abs=1e-5), k
  assert 1.0 < values["health/rankme_z"] <= config.head.bottleneck_dim
