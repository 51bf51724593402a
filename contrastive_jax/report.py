"""`python -m contrastive_jax.report` is `python -m
contrastive_jax.evaluation.report` (its old name): kept as an alias."""

from contrastive_jax.evaluation.report import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
  main()
