"""The one command-line runner every entry point uses (main, export, embed,
prepare, preview, report, digits): flag parsing, `--help`, the one-line
error contract and the exit status, in `run(tool, argv) -> int`.

An entry point is a `Tool`: its flags (defined on a `FlagValues` of its
own, so that several tools run in one process, as the tests run them) and
its body, which raises `UserError` for bad input. Its module then has

    run, main = cli.entry_points(TOOL)
    # run(argv) -> int in process (tests); main() for console_scripts and
    # `python -m` (exits with run's status).

Exit status: 0 done (and `--help`), 2 bad input (one `error:` line on
stderr, no traceback). Anything else is a bug and keeps its traceback.
"""

import ast
import dataclasses
import os
import re
import sys
from typing import Any, Callable, Sequence

from contrastive_jax.errors import UserError

CHECKPOINT_HELP = ("Pretraining workdir, its checkpoints/ directory or one "
                   "checkpoints/<step> directory.")
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")
# What reading a config file and its overrides raises for bad input.
CONFIG_ERRORS = (AttributeError, OSError, ValueError, TypeError, KeyError)


@dataclasses.dataclass(frozen=True)
class Tool:
  """A command. `define(flag_values, argv)` defines its flags and returns
  what `body(flags, args)` reads them through (`argv`: for ml_collections'
  config flags, which find their `--config.FIELD` overrides in it); `args` are the positional
  arguments (refused unless `positional`). `usage` is the synopsis --help
  prints above the flags."""
  usage: str
  define: Callable[[Any, list[str]], Any]
  body: Callable[[Any, list[str]], None]
  positional: bool = False
  # absl's logging level while the body runs (main logs its progress).
  log_info: bool = False


def run(tool: Tool, argv: Sequence[str] | None = None) -> int:
  """Runs `tool` on `argv` (default: sys.argv; argv[0] is the program) and
  returns its exit status."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv if argv is None else argv)
  # A tool sets absl's verbosity and log filters for its own run; in
  # process (tests, notebooks) the caller's come back afterwards.
  verbosity = logging.get_verbosity()
  handler = logging.get_absl_handler()
  filters = list(handler.filters)
  try:
    return _run(tool, argv)
  finally:
    logging.set_verbosity(verbosity)
    handler.filters[:] = filters


def entry_points(tool: Tool) -> tuple[Callable[..., int], Callable[[], None]]:
  """(run, main) of a tool's module: `run(argv=None) -> int` runs `tool`
  in process (argv[0] is the program; default sys.argv) and returns its
  exit status; `main()` (console_scripts, `python -m`) exits with it."""

  def run_tool(argv: Sequence[str] | None = None) -> int:
    return run(tool, argv)

  def main():
    sys.exit(run_tool())

  run_tool.__doc__ = f"`{tool.usage}` in process: its exit status."
  main.__doc__ = f"`{tool.usage}` (and its console_scripts command)."
  return run_tool, main


def _run(tool: Tool, argv: list[str]) -> int:
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  handles = tool.define(flag_values, argv)
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    print(f"usage: {tool.usage}\n\n{flag_values.get_help()}")
    return 0
  try:
    try:
      rest = flag_values(argv)
    except (flags.Error, *CONFIG_ERRORS) as e:
      # A bad flag, a missing config file, a misspelled or mistyped
      # override (ml_collections parses those with the flags).
      raise UserError(flag_error_line(e)) from e
    except Exception as e:  # pylint: disable=broad-except
      located = config_file_error(e, argv)
      if located is None:
        raise  # Not the user's config file: a bug, with its traceback.
      raise UserError(located) from e
    if len(rest) > 1 and not tool.positional:
      raise UserError(f"unexpected arguments: {' '.join(rest[1:])}")
    # absl writes "Logging before flag parsing" until its own flags are.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    if tool.log_info:
      logging.use_absl_handler()
      logging.set_verbosity(logging.INFO)
    tool.body(handles, rest[1:])
  except UserError as e:
    logging.flush()
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def read_config(config_flag, argv: Sequence[str] | None = None):
  """The ConfigDict of a `config_flags.DEFINE_config_file` flag, its file
  loaded and its overrides applied (both happen lazily): a missing file,
  an unknown or mistyped field, or an error the file itself raises is one
  UserError line."""
  argv = sys.argv if argv is None else argv
  try:
    config = config_flag.value
    config.to_dict()
    return config
  except CONFIG_ERRORS as e:
    raise UserError(f"--config: {summary(e)}") from e
  except Exception as e:  # pylint: disable=broad-except
    located = config_file_error(e, argv)
    if located is None:
      raise
    raise UserError(located) from e


def summary(error: BaseException) -> str:
  """One line for an error raised while reading a config. Config-file
  errors arrive wrapped with the config file's traceback as text; the line
  users need is its last "SomethingError: ..." line."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  for line in reversed(lines):
    if re.match(r"^\w+(Error|Exception): ", line):
      return line
  return " ".join(lines) or type(error).__name__


def flag_error_line(error: BaseException) -> str:
  """One line for a flag that does not parse (ml_collections' overrides
  included: an unknown field comes as ConfigDict's AttributeError)."""
  text = str(error)
  if isinstance(error, AttributeError):
    # ConfigDict's answer to overriding a field that does not exist; its
    # str() is the repr of "'name'\nDid you mean ...?".
    if text.startswith("'"):
      try:
        text = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        pass
    field, _, hint = text.partition("\n")
    return f"--config: no such field {field}. {hint}".strip()
  return summary(error)


def _config_path(argv) -> str | None:
  """The file of --config in `argv` (without its :VARIANT)."""
  for i, arg in enumerate(argv):
    value = None
    if arg.startswith("--config="):
      value = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    if value:
      return value.split(":", 1)[0]
  return None


def config_file_error(error: BaseException, argv) -> str | None:
  """One line for an error the config file itself raised (a syntax error,
  a NameError, anything its code raises), naming the file and the line;
  None when the error did not come from the file."""
  path = _config_path(argv)
  if not path:
    return None
  real = os.path.realpath(path)
  if (isinstance(error, SyntaxError) and error.filename
      and os.path.realpath(error.filename) == real):
    return (f"--config: {path} line {error.lineno}: SyntaxError: "
            f"{error.msg}")
  line, tb = None, error.__traceback__
  while tb is not None:
    if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
      line = tb.tb_lineno
    tb = tb.tb_next
  if line is None:
    return None
  message = str(error).splitlines()[0] if str(error) else ""
  return f"--config: {path} line {line}: {type(error).__name__}: {message}"


def quiet_library_logs():
  """Command-line tools (export, embed) log our INFO lines (progress) and
  every library's warnings, but from Orbax (a dozen lines per restore) only
  errors."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  def keep(record):
    if "/orbax/" in record.pathname:
      return record.levelno >= std_logging.ERROR
    return (record.levelno >= std_logging.WARNING
            or "/contrastive_jax/" in record.pathname)
  logging.get_absl_handler().addFilter(keep)
