"""Plots a pretraining run's health monitors beside its kNN accuracy (the
figure in docs/monitoring.md):

  python benchmarks/plot_health.py WORKDIR OUT.png [--title TEXT]

Reads WORKDIR/metrics.jsonl. Needs matplotlib (not a dependency of the
package).
"""

import argparse
import json
import os

_PANELS = (("knn_accuracy", "kNN accuracy (labels)"),
           ("health/rankme_h", "RankMe of h"),
           ("health/rankme_z", "RankMe of z"),
           ("health/z_std_ratio", "z std x sqrt(d)"),
           ("health/alignment", "alignment"),
           ("health/uniformity", "uniformity"))


def series(workdir: str) -> dict:
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      for key, _ in _PANELS:
        if key in row:
          out.setdefault(key, []).append((row["step"], row[key]))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("out")
  parser.add_argument("--title", default="")
  args = parser.parse_args()
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = series(args.workdir)
  fig, axes = plt.subplots(2, 3, figsize=(10, 5.5), sharex=True)
  for ax, (key, label) in zip(axes.flat, _PANELS):
    points = data.get(key, [])
    if points:
      ax.plot(*zip(*points), marker="o")
    ax.set_title(label, fontsize=10)
    ax.grid(alpha=0.3)
  for ax in axes[-1]:
    ax.set_xlabel("step")
  if args.title:
    fig.suptitle(args.title)
  fig.tight_layout()
  fig.savefig(args.out, dpi=80)


if __name__ == "__main__":
  main()
