"""The registry: a dataset string -> the `Source` of one of its splits.

  digits                 scikit-learn's digits, in memory (digits.py)
  folder:PATH            a directory (or gs:// path) of image files (folder.py)
  any other name         a prepared TFDS dataset, read by index from its
                         ArrayRecord (tfds_array_record.py) or TFRecord
                         (tfds_tfrecord.py) files

Resolve each split once per run (`open_source`) and pass the object down:
nothing downstream branches on the dataset's name or kind.
"""

import importlib
from typing import Any, Mapping

from contrastive_jax.config import lib as config_lib
from contrastive_jax.data.sources.base import (READ_GROUP, Source,
                                               pending_error)
from contrastive_jax.errors import ConfigError

# Kind -> module; each module has `open(dataset, split, *, data_dir,
# workdir, options) -> Source`. Modules load on first use (the folder and
# TFRecord readers pull in code a digits run never needs).
_MODULES = {
    'digits': 'contrastive_jax.data.sources.digits',
    'folder': 'contrastive_jax.data.sources.folder',
    'tfds': 'contrastive_jax.data.sources.tfds',
}
FOLDER_PREFIX = 'folder:'


def kind_of(dataset) -> str:
  """Which module reads `dataset`: 'digits', 'folder' or 'tfds'."""
  if not isinstance(dataset, str) or not dataset.strip():
    raise ConfigError(f'config.dataset={dataset!r} is invalid: expected '
                      "'digits', 'folder:PATH' or a TFDS dataset name")
  if dataset == 'digits':
    return 'digits'
  if dataset.startswith(FOLDER_PREFIX):
    return 'folder'
  return 'tfds'


def open_source(dataset: str, split: str, *, data_dir: str | None = None,
                workdir: str | None = None,
                options: Mapping[str, Any] | None = None) -> Source:
  """The `Source` of `split` of `dataset`.

  `workdir`, when given, is where a source keeps what must stay fixed for
  the run (an image folder's file index and class names). `options` are
  the config's `data` fields (e.g. max_bad_fraction).
  """
  module = importlib.import_module(_MODULES[kind_of(dataset)])
  return module.open(dataset, split, data_dir=data_dir, workdir=workdir,
                     options=dict(options or {}))


def from_config(config, split: str, *, workdir: str | None = None) -> Source:
  """`open_source` with the dataset, data dir and options of a config."""
  return open_source(config.dataset, split, data_dir=config_lib.value(config, 'data_dir'),
                     workdir=workdir, options=config_lib.value(config, 'data'))


__all__ = ['READ_GROUP', 'Source', 'from_config', 'kind_of', 'open_source',
           'pending_error']
