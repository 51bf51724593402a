"""Prints the evaluation results of one or more runs side by side:

  python -m contrastive_jax.report WORKDIR [WORKDIR ...]
"""

import json
import os
import sys

# Written by evaluation.write_results; kept here so this command stays free
# of TensorFlow and JAX imports.
RESULTS_FILE = "eval_results.json"


def main(argv: list[str]) -> int:
  if not argv:
    print("usage: python -m contrastive_jax.report WORKDIR [WORKDIR ...]",
          file=sys.stderr)
    return 2
  rows = []
  for workdir in argv:
    path = os.path.join(workdir, RESULTS_FILE)
    try:
      with open(path, encoding="utf-8") as f:
        rows.append((workdir, json.load(f)))
    except FileNotFoundError:
      # A pretraining run, or an evaluation that stopped (e.g. on data
      # without labels), has no results.
      print(f"error: no evaluation results in {workdir} ({RESULTS_FILE}): "
            "report reads the workdirs of linear evaluation and finetuning "
            "runs on labelled data", file=sys.stderr)
      return 2
    except (OSError, ValueError) as e:
      print(f"error: cannot read {path}: {e}", file=sys.stderr)
      return 2
  print(f"{'run':<40} {'encoder':<28} {'top-1':>7} {'top-5':>7} {'n':>7}")
  for workdir, r in rows:
    encoder = r.get("pretrained") or "?"
    if r.get("checkpoint_step", -1) >= 0:
      encoder = f"{encoder} @{r['checkpoint_step']}"
    print(f"{workdir:<40} {encoder[-28:]:<28} {100 * r['top1']:>6.2f}% "
          f"{100 * r['top5']:>6.2f}% {r['num_examples']:>7}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
