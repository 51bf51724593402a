"""config_lib.load: the configs/ files by name or path, as --config."""

import os

import ml_collections
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


def test_every_method_reads_its_own_defaults_and_temperature():
  """One default per field (base_config's, by `field_default`); a field
  that an older config lacks is taken at its method family's default, not
  MoCo's for every method; `temperature` is checked only where a method
  reads it."""
  from contrastive_jax import resume_check  # pylint: disable=g-import-not-at-top
  from contrastive_jax.config import checks, defaults  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  assert defaults.field_default("max_consecutive_nonfinite") == 10
  assert "queue_size" in resume_check.default_values("moco")
  byol = resume_check.default_values("byol")
  assert "queue_size" not in byol
  assert byol["input_norm"] == defaults.base_config().input_norm
  for name, reads in (("simclr", True), ("moco_v2", True), ("moco_v3", True),
                      ("byol", False), ("simsiam", False)):
    config = config_lib.load(f"{name}:digits")
    config.temperature = 0.0
    if reads:
      with pytest.raises(ConfigError, match="config.temperature=0.0"):
        checks.validate(config, num_devices=1, num_processes=1)
    else:
      checks.validate(config, num_devices=1, num_processes=1)


# --- One path: load(spec, overrides), value, upgrade ------------------------

def test_overrides_read_by_the_field_type_as_the_command_line_does():
  """'FIELD=VALUE' means what --config.FIELD=VALUE means: int, float (from
  '2', 'inf'), bool ('true', 'False'), str as written, tuple, nested
  fields, a placeholder's declared type."""
  c = config_lib.load("simclr:digits", [
      "batch_size=64", "learning_rate=2", "weight_decay=inf",
      "online_probe=false", "half_precision=True",
      "view_augment=resize(16)|flip_lr", "lr_decay_epochs=(3, 4)",
      "head.output_dim=7", "knn.temperature=0.5", "data_dir=/data/x",
      "dataset=cifar10:3.0.2"])
  assert c.batch_size == 64 and type(c.batch_size) is int
  assert c.learning_rate == 2.0 and type(c.learning_rate) is float
  assert c.weight_decay == float("inf")
  assert c.online_probe is False and c.half_precision is True
  assert c.view_augment == "resize(16)|flip_lr"
  assert c.lr_decay_epochs == (3, 4)
  assert c.head.output_dim == 7 and c.knn.temperature == 0.5
  assert c.data_dir == "/data/x" and c.dataset == "cifar10:3.0.2"
  # A mapping gives Python values (benchmarks/harness.load_config's).
  m = config_lib.load("simclr:digits", {"head.output_dim": 9,
                                        "learning_rate": 1})
  assert m.head.output_dim == 9 and m.learning_rate == 1.0


def test_overrides_equal_what_mains_config_flag_makes():
  """The same overrides through main's --config flag (ml_collections'
  config_flags) and through config_lib.load give the same config."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from contrastive_jax import main  # pylint: disable=g-import-not-at-top
  overrides = ["batch_size=64", "learning_rate=2", "online_probe=false",
               "lr_decay_epochs=(3, 4)", "head.output_dim=7",
               "data_dir=/data/x", "eval_augment=resize(16)",
               "weight_decay=nan"]
  path = os.path.join(config_lib.CONFIG_DIR, "moco_v2.py")
  argv = ["main", f"--config={path}:digits", "--workdir=/tmp/x",
          *[f"--config.{o}" for o in overrides]]
  fv = flags.FlagValues()
  handles = main.TOOL.define(fv, argv)
  fv(argv)
  by_flag = handles.config.value.to_dict()
  by_lib = config_lib.load(f"{path}:digits", overrides).to_dict()
  assert repr(by_flag) == repr(by_lib)  # nan != nan; repr compares it


@pytest.mark.parametrize("override,message", [
    ("batch_sise=64", r"config.batch_sise is not a field of this config; "
     "did you mean batch_size\\?"),
    ("head.nope=1", "config.head.nope is not a field"),
    ("batch_size=2.5", r"config.batch_size='2.5' is invalid"),
    ("learning_rate=fast", r"config.learning_rate='fast' is invalid"),
    ("online_probe=maybe", r"config.online_probe='maybe' is invalid"),
    ("batch_size", r"override 'batch_size' is invalid: write FIELD=VALUE"),
])
def test_a_bad_override_is_one_config_error(override, message):
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=message) as info:
    config_lib.load("simclr:digits", [override])
  assert "\n" not in str(info.value)
  with pytest.raises(ConfigError, match="is not a field"):
    config_lib.load("simclr:digits", {"no_such": 1})


def test_value_reads_the_field_or_its_one_default():
  from contrastive_jax.config import defaults  # pylint: disable=g-import-not-at-top
  c = config_lib.load("simclr:digits")
  assert config_lib.value(c, "batch_size") == c.batch_size
  assert config_lib.value(c, "health.num_examples") == 512
  del c["max_consecutive_nonfinite"]
  assert config_lib.value(c, "max_consecutive_nonfinite") == 10
  # A method's optional field, which simclr's config leaves out.
  assert "clip_grad" not in c and config_lib.value(c, "clip_grad") == 0.0
  assert config_lib.value(c, "nesterov") is False
  with pytest.raises(KeyError, match="has no default"):
    defaults.field_default("no_such_field")
  # Every optional field is one that base_config leaves out.
  base = defaults.base_config()
  assert not set(defaults.OPTIONAL_FIELDS) & set(base)


def test_upgrade_fills_what_a_stored_config_lacks_and_keeps_the_rest():
  stored = {"method": "simclr", "batch_size": 8, "model": "tiny_resnet",
            "head": {"output_dim": 16}, "lr_decay_epochs": [3]}
  c = config_lib.upgrade(stored)
  assert c.batch_size == 8 and c.model == "tiny_resnet"
  assert c.head.output_dim == 16 and c.head.num_layers == 2
  assert c.lr_decay_epochs == [3]
  assert c.input_norm == "none" and c.max_consecutive_nonfinite == 10
  assert c.data.max_bad_fraction == 0.001
  assert stored == {"method": "simclr", "batch_size": 8,
                    "model": "tiny_resnet", "head": {"output_dim": 16},
                    "lr_decay_epochs": [3]}  # not changed in place


def test_resume_defaults_come_from_the_registry_not_method_names():
  """methods.base_config reads each family's base config off its Method
  record (`Method.base_config`, one registry): MoCo's fields for MoCo, the
  classifiers' for linear_eval and finetune, the common base by default."""
  import inspect  # pylint: disable=g-import-not-at-top
  from contrastive_jax import methods, resume_check  # pylint: disable=g-import-not-at-top
  from contrastive_jax.config import classifier, defaults  # pylint: disable=g-import-not-at-top
  assert methods.get_method("moco").base_config is defaults.moco_base_config
  assert (methods.get_method("linear_eval").base_config
          is classifier.linear_eval_base)
  assert (methods.get_method("finetune").base_config
          is classifier.finetune_base)
  assert methods.get_method("byol").base_config is defaults.base_config
  assert not hasattr(methods, "_BASE_CONFIGS")
  assert methods.base_config("moco").queue_size == 65_536
  assert "queue_size" not in methods.base_config("byol")
  assert methods.base_config("not_a_method").method == "simclr"
  le = resume_check.default_values("linear_eval")
  assert le["classifier_init_stddev"] == 0.0 and le["label_percent"] == 100
  assert resume_check.default_values("finetune")["nesterov"] is False
  source = inspect.getsource(resume_check.default_values)
  assert "==" not in source and " in (" not in source


def test_every_variant_loads_through_load_as_through_its_file():
  """config_lib.load(spec) is the file's get_config(variant), for every
  variant a config file lists."""
  for name in config_lib.config_names():
    module = config_lib.module(name)
    for variant in getattr(module, "VARIANTS", ("",)):
      spec = f"{name}:{variant}" if variant else name
      assert (config_lib.load(spec).to_dict()
              == module.get_config(variant or None).to_dict()), spec


@pytest.mark.parametrize("spec,overrides,message", [
    ("linear_eval:digits", ["pretrained=random", "classifier_init_stddev=-1.0"],
     r"config.classifier_init_stddev=-1.0 is invalid: must be a number >= 0"),
    # linear_eval's config has no such field: a hand-made one.
    ("linear_eval:digits", ["pretrained=random", "+finetune_from_head_layer"],
     r"finetune_from_head_layer must be 0 or 1 \(1: finetune only\); got 1 "
     "for method 'linear_eval'"),
    ("finetune:digits", ["pretrained=random", "finetune_from_head_layer=2"],
     "finetune_from_head_layer must be 0 or 1"),
    ("finetune:digits", ["pretrained=pixels"], "no parameters to finetune"),
    ("linear_eval:digits", [], "config.pretrained is empty"),
    ("linear_eval:digits", ["pretrained=random", "num_classes=1"],
     r"config.num_classes=1 is invalid: must be an integer >= 2, or -1"),
])
def test_classifier_fields_are_checked_before_anything_is_built(
    spec, overrides, message):
  """The classifiers' fields: one ConfigError from the validation layer
  (config/classifier.check_config), no model built, no data read."""
  from contrastive_jax.config import checks  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  config = config_lib.load(spec, [o for o in overrides if o[0] != "+"])
  for added in (o[1:] for o in overrides if o[0] == "+"):
    config[added] = 1
  with pytest.raises(ConfigError, match=message) as info:
    checks.validate(config, num_devices=1, num_processes=1)
  assert "\n" not in str(info.value)
  # A good value passes.
  checks.validate(config_lib.load(spec, ["pretrained=random"]),
                  num_devices=1, num_processes=1)


def test_one_flattener_for_dotted_names():
  """defaults.dotted is the flattener field defaults, overrides' field
  names and the resume check share: leaves by dotted name, blocks (before
  their fields) only when asked for."""
  from contrastive_jax.config import defaults  # pylint: disable=g-import-not-at-top
  from contrastive_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  tree = {"a": 1, "b": {"c": {"d": 2}, "e": 3}, "f": {}}
  assert defaults.dotted(tree) == {"a": 1, "b.c.d": 2, "b.e": 3}
  assert list(defaults.dotted(tree, blocks=True).items()) == [
      ("a", 1), ("b", {"c": {"d": 2}, "e": 3}), ("b.c", {"d": 2}),
      ("b.c.d", 2), ("b.e", 3), ("f", {})]
  assert defaults.field_default("health.every_steps") == (
      defaults.base_config().health.every_steps)
  with pytest.raises(ConfigError, match="did you mean health.every_steps"):
    config_lib.set_value(defaults.base_config(), "health.every_step", 1)


def test_a_classifier_config_without_knn_eval_did_no_knn_scoring():
  """knn_eval came with the kNN score of the final evaluation (dee6a01); a
  classifier run stored before it scored nothing by kNN. The code reading
  such a config (classifier_eval, through config_lib.value) and the resume
  check agree on that: False, not the classifier base's True."""
  from contrastive_jax import resume_check  # pylint: disable=g-import-not-at-top
  from contrastive_jax.config import classifier  # pylint: disable=g-import-not-at-top
  new = classifier.linear_eval_base().to_dict()
  assert new["knn_eval"] is True  # Today's runs score by kNN.
  stored = dict(new)
  del stored["knn_eval"]
  assert config_lib.value(ml_collections.ConfigDict(stored),
                          "knn_eval") is False
  for method in ("linear_eval", "finetune"):
    assert resume_check.default_values(method)["knn_eval"] is False
  # No step reads it: such a run resumes with today's kNN score at the end,
  # or without it.
  assert "knn_eval" in resume_check.MAY_CHANGE
  assert resume_check.changed_fields(stored, new) == []
  assert resume_check.changed_fields(stored, dict(new, knn_eval=False)) == []
  assert resume_check.changed_fields(
      dict(new, knn_eval=False), new) == []
