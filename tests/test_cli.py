"""The entry points: every tool module's `run` and `main` come from
`cli.entry_points(TOOL)`, setup.py's console_scripts name those `main`s,
and each keeps the contract: `--help` exit 0, a bad flag one `error:` line
and exit 2, `main()` exiting with `run`'s status."""

import importlib
import os
import re
import sys

import pytest

from contrastive_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# command (contrastive-jax-NAME) -> module.
TOOLS = {"main": "contrastive_jax.main", "export": "contrastive_jax.export",
         "embed": "contrastive_jax.embed", "preview": "contrastive_jax.preview",
         "prepare": "contrastive_jax.prepare",
         "report": "contrastive_jax.evaluation.report",
         "digits": "contrastive_jax.data.digits"}


def test_console_scripts_are_the_tools_mains():
  with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
    scripts = dict(re.findall(r'"contrastive-jax-(\w+)=([\w.]+):main"',
                              f.read()))
  assert scripts == TOOLS


@pytest.mark.parametrize("module_name", sorted(TOOLS.values()))
def test_run_and_main_keep_the_contract(module_name, capsys, monkeypatch):
  module = importlib.import_module(module_name)
  assert isinstance(module.TOOL, cli.Tool)
  assert module.TOOL.usage in module.run.__doc__
  assert module.run(["prog", "--help"]) == 0
  assert capsys.readouterr().out.startswith(f"usage: {module.TOOL.usage}\n")
  assert module.run(["prog", "--no_such_flag=1"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  # main(): sys.argv through run, its status as the exit code.
  for argv, status in ((["prog", "--help"], 0),
                       (["prog", "--no_such_flag=1"], 2)):
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
      module.main()
    assert exit_info.value.code == status
  capsys.readouterr()


def test_entry_points_run_the_tool_in_process(capsys, monkeypatch):
  seen = []
  tool = cli.Tool(usage="prog [ARG ...]", define=lambda fv, argv: None,
                  body=lambda flags, args: seen.append(args), positional=True)
  run, main = cli.entry_points(tool)
  assert run(["prog", "a", "b"]) == 0 and seen == [["a", "b"]]
  assert "prog [ARG ...]" in run.__doc__ and "prog [ARG ...]" in main.__doc__
  monkeypatch.setattr(sys, "argv", ["prog", "c"])
  with pytest.raises(SystemExit) as exit_info:
    main()
  assert exit_info.value.code == 0 and seen[-1] == ["c"]
  assert capsys.readouterr().err == ""
