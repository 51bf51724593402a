"""Does pretraining beat the pixels? The quality benchmark on real data.

  python benchmarks/quality.py --config=simclr:small --data=mnist5k
  python benchmarks/quality.py --config=byol:small --data=digits \
      --steps=300 --set temperature=0.2 --set head.output_dim=64

One run, in process, through the product's own code:
  1. pretrains `--config` on the labelled real folder `--data`
     (benchmarks/quality_data.py; read as `folder:PATH`, as a user's images)
     for `--steps` steps (default: the config's own budget);
  2. evaluates the encoder, a `random` encoder of the same architecture and
     the `pixels` baseline with the product's linear evaluation
     (`linear_eval.py:small`: the same protocol for all three) and its kNN
     (`eval_results.json`: top1, knn_top1);
  3. prints the health monitors at the end of pretraining (RankMe of h and
     z, the collapse std, alignment, uniformity) beside them,
and appends one JSON line to ROOT/results.jsonl. The baselines do not depend
on the pretraining run: each is computed once per dataset and protocol and
kept under ROOT/baselines/.

These are benchmarks, not timed tests: the numbers go to BENCHMARKS.md.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from absl import logging  # noqa: E402

import quality_data  # noqa: E402  pylint: disable=g-bad-import-order
from contrastive_jax import train  # noqa: E402
from contrastive_jax.config import lib as config_lib  # noqa: E402

HEALTH = ("health/rankme_h", "health/rankme_z", "health/z_std_ratio",
          "health/alignment", "health/uniformity")
# The fields of a pretraining config that name its encoder: a `random`
# baseline is built from them.
_ARCHITECTURE = ("model", "width_multiplier", "cifar_stem", "conv_init",
                 "zero_init_residual", "input_norm", "patch_size")


def linear_config(pretrain, dataset: str, pretrained: str):
  """`linear_eval.py:small` on `dataset` at the pretraining run's image size
  and eval view, evaluating `pretrained`."""
  c = config_lib.load("linear_eval:small")
  c.dataset = dataset
  c.image_size = pretrain.image_size
  c.eval_augment = pretrain.eval_augment
  c.view_augment = pretrain.eval_augment
  c.pretrained = pretrained
  if pretrained == "random":
    for field in _ARCHITECTURE:
      c[field] = pretrain[field]
  return c


def evaluate(config, workdir: str, fresh: bool = True) -> dict:
  """The eval results of `config` run in `workdir`: run afresh, or (not
  `fresh`: a baseline shared by every run under ROOT) taken from a finished
  workdir. A shared one is computed in a folder of this run's own and
  renamed into place, so two runs started together never remove the
  workdir the other is writing; the first to finish is kept."""
  results = os.path.join(workdir, "eval_results.json")
  if not fresh and os.path.exists(results):
    return json.load(open(results))
  if fresh:
    shutil.rmtree(workdir, ignore_errors=True)
    train.train_and_evaluate(config, workdir)
    return json.load(open(results))
  own = quality_data.own_folder(workdir)
  train.train_and_evaluate(config, own)
  with open(os.path.join(own, "eval_results.json")) as f:
    out = json.load(f)
  if os.path.isdir(workdir) and not os.path.exists(results):
    shutil.rmtree(workdir, ignore_errors=True)  # An interrupted one's.
  quality_data.publish(own, workdir)
  return out


def last_health(workdir: str) -> dict:
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      out.update({k: row[k] for k in HEALTH if k in row})
      if "knn_accuracy" in row:
        out["knn_monitor"] = row["knn_accuracy"]
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True,
                      help="a config as 'simclr:small'")
  parser.add_argument("--data", default="mnist5k",
                      choices=quality_data.DATASETS)
  parser.add_argument("--steps", type=int, default=0,
                      help="pretraining steps (0: the config's budget)")
  parser.add_argument("--set", action="append", default=[],
                      metavar="FIELD=VALUE", help="a config override")
  parser.add_argument("--root", default="/tmp/contrastive_jax_quality")
  parser.add_argument("--tag", default="", help="a name for this run")
  parser.add_argument("--fresh", action="store_true",
                      help="pretrain again even if this run finished")
  args = parser.parse_args(argv)
  logging.set_verbosity(logging.WARNING)

  folder = quality_data.folder(args.data, os.path.join(args.root, "data"))
  dataset = f"folder:{folder}"
  config = config_lib.load(args.config)
  config.dataset = dataset
  if args.steps:
    config.num_train_steps = args.steps
  config_lib.apply_overrides(config, args.set)
  key = hashlib.sha1(json.dumps(
      [args.config, args.data, args.steps, args.set]).encode()).hexdigest()
  workdir = os.path.join(args.root, "runs", f"{args.tag or 'run'}_{key[:8]}")

  start = time.time()
  if args.fresh:
    shutil.rmtree(workdir, ignore_errors=True)
  # The same config and overrides: a finished run is reused (and an
  # interrupted one resumed), bit for bit the same.
  train.train_and_evaluate(config, os.path.join(workdir, "pretrain"))
  pretrain_s = time.time() - start
  health = last_health(os.path.join(workdir, "pretrain"))

  rows = {"encoder": evaluate(
      linear_config(config, dataset, os.path.join(workdir, "pretrain")),
      os.path.join(workdir, "linear"))}
  # The baselines depend on the data, the architecture and the eval view.
  for name in ("random", "pixels"):
    base = linear_config(config, dataset, name)
    base_key = hashlib.sha1(json.dumps(
        [args.data, name, base.to_dict()], sort_keys=True,
        default=str).encode()).hexdigest()[:8]
    rows[name] = evaluate(base, os.path.join(
        args.root, "baselines", f"{args.data}_{name}_{base_key}"),
                          fresh=False)
  total_s = time.time() - start

  record = {
      "config": args.config, "data": args.data, "set": args.set,
      "tag": args.tag, "steps": int(config.num_train_steps),
      "pretrain_s": round(pretrain_s, 1), "total_s": round(total_s, 1),
      **{f"linear_{k}": v["top1"] for k, v in rows.items()},
      **{f"knn_{k}": v.get("knn_top1") for k, v in rows.items()},
      **health}
  margin = record["linear_encoder"] - max(record["linear_random"],
                                          record["linear_pixels"])
  record["margin"] = margin
  with open(os.path.join(args.root, "results.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
  print(f"{args.config} on {args.data} ({' '.join(args.set)}): "
        f"{record['steps']} steps, pretraining {pretrain_s:.0f} s")
  print(f"{'':<10} {'linear':>8} {'kNN':>8}")
  for name in rows:
    knn = record[f"knn_{name}"]
    print(f"{name:<10} {100 * record[f'linear_{name}']:>7.2f}% "
          f"{'' if knn is None else f'{100 * knn:7.2f}%':>8}")
  print(f"margin over the better baseline: {100 * margin:+.2f} points")
  print("health: " + ", ".join(f"{k.split('/')[-1]} {v:.3f}"
                               for k, v in health.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
