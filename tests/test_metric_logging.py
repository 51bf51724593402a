import json

import numpy as np

from contrastive_jax import metric_logging


def test_summarize_averages_and_keeps_last_learning_rate():
  steps = [{"loss": np.float32(2.0), "learning_rate": np.float32(0.1)},
           {"loss": np.float32(4.0), "learning_rate": np.float32(0.2)}]
  out = metric_logging.summarize(steps)
  assert out == {"loss": 3.0, "learning_rate": np.float32(0.2).item()}


def test_json_lines_writer_appends_rows(tmp_path):
  path = tmp_path / "m.jsonl"
  writer = metric_logging.JsonLinesWriter(str(path))
  writer.write_scalars(10, {"loss": np.float32(1.5)})
  writer.write_scalars(20, {"loss": 1.25, "acc": np.asarray(0.5)})
  writer.close()
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert rows == [{"step": 10, "loss": 1.5},
                  {"step": 20, "loss": 1.25, "acc": 0.5}]
