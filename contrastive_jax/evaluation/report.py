"""Prints the evaluation results of one or more runs side by side:

  python -m contrastive_jax.evaluation.report WORKDIR [WORKDIR ...]

Rows are linear-evaluation (or finetuning) workdirs. The baselines, runs
with `pretrained=random` or `pretrained=pixels`, are marked as such; each
pretrained encoder then gets its margin over the better of the baselines
evaluated on the same dataset and split (top-1, and kNN top-1 where both
have it).
"""

import json
import os

from contrastive_jax import cli
from contrastive_jax.errors import UserError

# Written by classifier_eval.write_results; kept here so this command stays
# free of TensorFlow and JAX imports.
RESULTS_FILE = "eval_results.json"
# What each results file must hold for its row.
_NUMBERS = ("top1", "top5", "num_examples")
# `pretrained` of the baselines (methods/classifier.py BASELINES).
BASELINES = ("random", "pixels")


def _problem(results) -> str | None:
  """What makes `results` (a parsed results file) unusable, or None."""
  if not isinstance(results, dict):
    return (f"expected a JSON object with {', '.join(_NUMBERS)}, got "
            f"{type(results).__name__}")
  missing = [k for k in _NUMBERS if k not in results]
  if missing:
    return f"no {', '.join(missing)} in it"
  for key in _NUMBERS:
    value = results[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return f"{key} is {value!r}, not a number"
  step = results.get("checkpoint_step", -1)
  if isinstance(step, bool) or not isinstance(step, (int, float)):
    return f"checkpoint_step is {step!r}, not a number"
  pretrained = results.get("pretrained")
  if pretrained is not None and not isinstance(pretrained, str):
    return f"pretrained is {pretrained!r}, not a path"
  knn = results.get("knn_top1")
  if knn is not None and (isinstance(knn, bool)
                          or not isinstance(knn, (int, float))):
    return f"knn_top1 is {knn!r}, not a number"
  return None


def _percent(value) -> str:
  return "" if value is None else f"{100 * value:.2f}%"


def margins(rows) -> list[str]:
  """A line per pretrained encoder: its margin over the better baseline
  of its dataset and split."""
  lines = []
  for workdir, r in rows:
    if r.get("pretrained") in BASELINES:
      continue
    same = [b for _, b in rows if b.get("pretrained") in BASELINES
            and (b.get("dataset"), b.get("split")) == (r.get("dataset"),
                                                       r.get("split"))]
    if not same:
      continue
    best = max(same, key=lambda b: b["top1"])
    text = (f"{workdir}: {100 * (r['top1'] - best['top1']):+.2f} points "
            f"top-1 over the better baseline ({best['pretrained']}, "
            f"{_percent(best['top1'])})")
    knn_base = [b for b in same if b.get("knn_top1") is not None]
    if r.get("knn_top1") is not None and knn_base:
      best_knn = max(knn_base, key=lambda b: b["knn_top1"])
      text += (f"; kNN {100 * (r['knn_top1'] - best_knn['knn_top1']):+.2f} "
               f"({best_knn['pretrained']}, "
               f"{_percent(best_knn['knn_top1'])})")
    lines.append(text)
  return lines


def _body(flags, workdirs: list[str]):
  del flags
  if not workdirs:
    raise UserError(f"usage: {TOOL.usage}")
  rows = []
  for workdir in workdirs:
    path = os.path.join(workdir, RESULTS_FILE)
    try:
      with open(path, encoding="utf-8") as f:
        rows.append((workdir, json.load(f)))
    except FileNotFoundError as e:
      # A pretraining run, or an evaluation that stopped (e.g. on data
      # without labels), has no results.
      raise UserError(
          f"no evaluation results in {workdir} ({RESULTS_FILE}): report "
          "reads the workdirs of linear evaluation and finetuning runs on "
          "labelled data") from e
    except (OSError, ValueError) as e:
      raise UserError(f"cannot read {path}: {e}") from e
    problem = _problem(rows[-1][1])
    if problem is not None:
      raise UserError(f"{path} is not an evaluation results file: {problem}")
  print(f"{'run':<40} {'encoder':<28} {'top-1':>7} {'top-5':>7} "
        f"{'kNN':>7} {'n':>7}")
  for workdir, r in rows:
    encoder = r.get("pretrained") or "?"
    if encoder in BASELINES:
      encoder = f"{encoder} (baseline)"
    elif r.get("checkpoint_step", -1) >= 0:
      encoder = f"{encoder} @{r['checkpoint_step']}"
    print(f"{workdir:<40} {encoder[-28:]:<28} {100 * r['top1']:>6.2f}% "
          f"{100 * r['top5']:>6.2f}% {_percent(r.get('knn_top1')):>7} "
          f"{r['num_examples']:>7}")
  for line in margins(rows):
    print(f"margin: {line}")


TOOL = cli.Tool(
    usage="python -m contrastive_jax.evaluation.report WORKDIR [WORKDIR ...]",
    define=lambda fv, argv: None, body=_body, positional=True)


run, main = cli.entry_points(TOOL)


if __name__ == "__main__":
  main()
