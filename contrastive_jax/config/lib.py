"""Loading the configs/ files by name, outside the command line.

    config = config_lib.load("simclr:digits")            # configs/simclr.py
    config = config_lib.load("configs/moco_v2.py:cifar10")

What `--config=configs/NAME.py:VARIANT` does for `main`, for tests,
benchmarks and notebooks. The configs live beside the package in a source
checkout (they are data, not code of the package); another directory can be
given.
"""

import importlib.util
import os

import ml_collections

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


def config_names(config_dir: str = CONFIG_DIR) -> list[str]:
  """Every config file in `config_dir`, by name (no extension)."""
  return sorted(f[:-3] for f in os.listdir(config_dir)
                if f.endswith(".py") and not f.startswith("_"))


def module(name: str, config_dir: str = CONFIG_DIR):
  """The config file `name` ('simclr', or a path to a .py) as a module."""
  path = (name if name.endswith(".py")
          else os.path.join(config_dir, f"{name}.py"))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file {path}")
  stem = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"configs_{stem}", path)
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  return loaded


def load(spec: str,
         config_dir: str = CONFIG_DIR) -> ml_collections.ConfigDict:
  """`spec` as on the command line: 'NAME[:VARIANT]' for configs/NAME.py, or
  'PATH.py[:VARIANT]'. No variant: the file's default."""
  name, _, variant = spec.partition(":")
  return module(name, config_dir).get_config(variant or None)
