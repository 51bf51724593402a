"""Moved to contrastive_jax.config.lib (kept while in-flight work moves over)."""
import sys

from contrastive_jax.config import lib as _moved

sys.modules[__name__] = _moved
