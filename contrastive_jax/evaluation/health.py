"""Label-free health of a representation: numbers that say whether
pretraining is learning, on labelled and unlabelled data alike.

For features of a fixed slice of images (rows: examples):
  * RankMe (Garrido et al., ICML 2023, eq. 1): exp of the entropy of the
    normalised singular values, p_k = s_k / sum(s) + eps. The effective
    number of directions the features use: 1 when every example maps to
    one direction, up to min(N, d).
  * The collapse std (the SimSiam paper's diagnostic, Chen & He 2021,
    section 4.1): the mean over dimensions of the std over examples of the
    l2-normalised z. sqrt(d) times it (`z_std_ratio`) is about 1 for
    features spread over the sphere and 0 when every example maps to one
    point.
  * Alignment and uniformity (Wang & Isola, ICML 2020, section 4): over the
    two views of each example, alignment = E ||z1 - z2||^2 (alpha 2; 0:
    views agree), uniformity = log E_{i<j} exp(-2 ||z_i - z_j||^2) (t 2;
    lower: more uniform), both on l2-normalised z, uniformity averaged over
    the two views.

Collapse (`collapsed`): z_std_ratio < COLLAPSE_STD_RATIO or RankMe of z <
COLLAPSE_RANK. The first is complete collapse (every image to nearly one
point: the normalised z spread less than a tenth of a uniform spread's); the
second is dimensional collapse to about one direction, which the std alone
can miss (z = +-v for a fixed v).
"""

import numpy as np

COLLAPSE_STD_RATIO = 0.1
COLLAPSE_RANK = 2.0
_EPS = 1e-7  # RankMe's epsilon (the paper's 1e-7)


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rankme(features) -> float:
  """The effective rank of `features` [N, d]."""
  s = np.linalg.svd(np.asarray(features, np.float64), compute_uv=False)
  if not np.isfinite(s).all() or s.sum() <= 0:
    return 1.0 if np.isfinite(s).all() else float("nan")
  p = s / s.sum() + _EPS
  return float(np.exp(-np.sum(p * np.log(p))))


def z_std(z) -> float:
  """The mean per-dimension std of the l2-normalised z [N, d]."""
  return float(np.mean(np.std(_unit(z), axis=0)))


def alignment(z1, z2) -> float:
  return float(np.mean(np.sum((_unit(z1) - _unit(z2)) ** 2, axis=-1)))


def uniformity(z) -> float:
  u = _unit(z)
  sq = np.sum(u * u, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * u @ u.T, 0.0)
  i, j = np.triu_indices(len(u), k=1)
  values = -2.0 * d2[i, j]
  top = values.max()  # log-mean-exp, stably
  return float(top + np.log(np.mean(np.exp(values - top))))


def metrics(h1, z1, z2) -> dict:
  """The health scalars of one slice: encoder features h1 and projections
  z1, z2 of its two views ([N, ...] each)."""
  d = np.asarray(z1).shape[-1]
  std = z_std(z1)
  return {
      "health/rankme_h": rankme(h1),
      "health/rankme_z": rankme(z1),
      "health/z_std": std,
      "health/z_std_ratio": std * np.sqrt(d),
      "health/alignment": alignment(z1, z2),
      "health/uniformity": 0.5 * (uniformity(z1) + uniformity(z2)),
  }


def collapsed(values: dict) -> bool:
  """Whether the `metrics` of a slice say the representation collapsed."""
  ratio, rank = values["health/z_std_ratio"], values["health/rankme_z"]
  return (not np.isfinite(ratio) or ratio < COLLAPSE_STD_RATIO
          or not np.isfinite(rank) or rank < COLLAPSE_RANK)
