"""`python -m contrastive_jax.report` is `python -m
contrastive_jax.evaluation.report` (its old name): kept as an alias."""

import sys

from contrastive_jax.evaluation.report import main

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
