"""A disk that fills up while metrics are written (not a checkpoint, which
reports its own) ends the run with one line, and the rerun resumes."""

import errno
import json
import os

import jax
import pytest

from contrastive_jax import main, metric_logging
from contrastive_jax.errors import UserError
from tests.test_checkpoint_faults import _tiny


def test_a_full_disk_while_writing_metrics_is_one_line_then_resumes(
    tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  config = _tiny(num_train_steps=6, checkpoint_every_steps=2,
                 log_every_steps=1)
  write = metric_logging.JsonLinesWriter.write_scalars

  def full_after_step_3(self, step, scalars):
    if step > 3:
      raise OSError(errno.ENOSPC, "No space left on device")
    return write(self, step, scalars)

  with monkeypatch.context() as m:
    m.setattr(metric_logging.JsonLinesWriter, "write_scalars",
              full_after_step_3)
    with pytest.raises(UserError, match=(
        rf"^no space left on device while training in {workdir} \(.*No "
        r"space left on device.*\); free some space and run the same "
        r"command again: it resumes from the newest checkpoint$")):
      main.train_or_user_error(config, workdir, devices=jax.devices()[:2])
  # Complete steps only (an async save the error interrupted leaves a
  # temporary directory, which the rerun ignores).
  steps = sorted(int(n) for n in os.listdir(os.path.join(workdir,
                                                         "checkpoints"))
                 if n.isdigit())
  assert all(s <= 4 for s in steps)
  # Space again: the same command resumes and finishes.
  state = main.train_or_user_error(config, workdir, devices=jax.devices()[:2])
  assert int(state.step) == 6
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[-1]["step"] == 6
