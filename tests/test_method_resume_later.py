"""test_method_resume.py's check for the methods it leaves to this module
(MoCo v3, Barlow Twins, DINO): a module of its own, so that the two
pytest-xdist workers (one module each at a time) share the work."""

import pytest

from tests import test_method_resume as resume

fast_compiles = resume.fast_compiles  # the module's compilation cache
LATER = tuple(sorted(set(resume.CONFIGS) - set(resume.HERE)))


def test_the_two_modules_run_every_method():
  assert LATER == ("barlow_twins", "dino", "moco_v3")


@pytest.mark.parametrize("method", LATER)
def test_preempted_run_resumes_bit_identical(method, tmp_path, monkeypatch):
  resume.check_resume(method, tmp_path, monkeypatch)
