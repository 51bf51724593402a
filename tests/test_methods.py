"""The Method interface: the registry, what each method asks of the loop,
and that a new method needs one registry line and nothing else."""

import dataclasses

import jax
import numpy as np
import pytest

from contrastive_jax import ema, method_steps, methods, parallel
from contrastive_jax.errors import ConfigError
from contrastive_jax.methods import base, simclr
from tests.test_simclr_step import fixed_batch, tiny_config


def test_registry_names_every_method_once():
  assert methods.names() == ["barlow_twins", "byol", "dino", "finetune",
                             "linear_eval", "moco", "moco_v3", "simclr",
                             "simsiam", "vicreg"]
  for name in methods.names():
    method = methods.get_method(name)
    assert isinstance(method, base.Method) and method.name == name
  assert methods.pretraining_methods() == ["barlow_twins", "byol", "dino",
                                           "moco", "moco_v3", "simclr",
                                           "simsiam", "vicreg"]
  with pytest.raises(ConfigError, match="config.method='nope' is not a "
                     "known method; choose one of: barlow_twins, byol, "
                     "dino, finetune, linear_eval"):
    methods.get_method("nope")


def test_what_each_method_asks_of_the_loop():
  moco, simclr_ = methods.get_method("moco"), methods.get_method("simclr")
  lin, ft = methods.get_method("linear_eval"), methods.get_method("finetune")
  assert moco.ema is ema.everything
  assert [m.ema for m in (simclr_, lin, ft)] == [None, None, None]
  assert [m.num_views for m in (moco, simclr_, lin, ft)] == [2, 2, 1, 1]
  assert [m.needs_labels for m in (moco, simclr_, lin, ft)] == [
      False, False, True, True]
  assert [m.evaluates for m in (moco, simclr_, lin, ft)] == [
      False, False, True, True]
  assert [m.pretrains_encoder for m in (moco, simclr_, lin, ft)] == [
      True, True, False, False]
  assert all(m.frozen is None for m in (moco, simclr_, lin, ft))
  params = {"encoder": {"conv": {"kernel": 1}}, "head": {"d": {"kernel": 1}},
            "probe": {"linear": {"kernel": 1}}, "linear": {"kernel": 1}}
  # The online probe and the classifier are SimCLR's `head_supervised`: no
  # weight decay, no LARS trust ratio.
  assert lin.no_decay is None  # SimCLR and MoCo decay the linear layer.
  for method, excluded in ((moco, "probe"), (simclr_, "probe"),
                           (ft, "linear")):
    mask = method.no_decay(params)
    assert [k for k in params if jax.tree.leaves(mask[k])[0]] == [excluded]


# A method defined outside the package: SimCLR's pieces under another name,
# with a frozen projection head.
OUTSIDE_METHOD = dataclasses.replace(
    simclr.METHOD, name="outside",
    frozen=lambda params: {k: jax.tree.map(lambda _: k == "head", v)
                           for k, v in params.items()})


def test_a_new_method_is_one_registry_line(monkeypatch):
  """Registered with one line, the step builder (what train.py runs) asks
  for its frozen mask: after a step the head has not moved, the encoder
  has. tests/test_guards.py trains a method registered the same way
  through train.py."""
  monkeypatch.setitem(methods._REGISTRY, "outside",  # pylint: disable=protected-access
                      "tests.test_methods:OUTSIDE_METHOD")
  config = tiny_config()
  config.method = "outside"
  config.online_probe = False
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  built = method_steps.build(config, mesh, steps_per_epoch=1, total_steps=2,
                             guard=False)
  assert built.method is OUTSIDE_METHOD
  with jax.set_mesh(mesh):
    start = built.init(jax.random.PRNGKey(0))
    start_host = jax.device_get(start)
    end, _ = built.train_step(start, parallel.global_batch(
        fixed_batch(config.batch_size, config.image_size), mesh))
  end = jax.device_get(end)
  jax.tree.map(np.testing.assert_array_equal, end.params["head"],
               start_host.params["head"])
  assert any(jax.tree.leaves(jax.tree.map(
      lambda a, b: bool(np.any(a != b)), end.params["encoder"],
      start_host.params["encoder"])))
