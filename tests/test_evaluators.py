"""The evaluator list: each entry's name and at_end are its evaluator
class's (said once), and the loop's two questions (due now, at the end)
pick the right evaluators."""

from contrastive_jax.evaluation import evaluators


def test_entries_read_name_and_at_end_from_their_class():
  got = {e.name: (e.at_end, e.reads_eval_split) for e in evaluators.ENTRIES}
  assert got == {"knn": (False, True), "health": (False, False),
                 "classifier": (True, True)}
  for entry in evaluators.ENTRIES:
    assert (entry.name, entry.at_end) == (entry.kind.name, entry.kind.at_end)
  knn, health, classifier = evaluators.ENTRIES
  assert not evaluators.any_at_end([knn, health])
  assert evaluators.any_at_end([knn, classifier])
  assert evaluators.reads_eval_split([health, knn])
  assert not evaluators.reads_eval_split([health])


class _Fake:
  def __init__(self, name, at_end, every):
    self.name, self.at_end, self._every, self.steps = name, at_end, every, []

  def due(self, step, total_steps):
    return step % self._every == 0 or step == total_steps

  def run(self, state, step):
    del state
    self.steps.append(step)
    return {f"{self.name}/step": step}


class _Writer:
  def __init__(self):
    self.rows = []

  def write_scalars(self, step, scalars):
    self.rows.append((step, scalars))


def test_run_due_skips_at_end_evaluators_and_run_at_end_runs_only_them():
  monitor, final = _Fake("knn", False, 2), _Fake("classifier", True, 1)
  writer = _Writer()
  for step in range(1, 6):
    evaluators.run_due([monitor, final], None, step, 5, writer)
  assert monitor.steps == [2, 4, 5] and final.steps == []
  evaluators.run_at_end([monitor, final], None, 5, writer)
  assert monitor.steps == [2, 4, 5] and final.steps == [5]
  assert writer.rows == [(2, {"knn/step": 2}), (4, {"knn/step": 4}),
                         (5, {"knn/step": 5}), (5, {"classifier/step": 5})]
