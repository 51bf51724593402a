"""Moved to contrastive_jax.config.checks (kept while in-flight work moves over)."""
import sys

from contrastive_jax.config import checks as _moved

sys.modules[__name__] = _moved
