"""What the command-line tools (export, embed, prepare, preview) share: the
one-line error contract and the checkpoint flag's wording."""

import sys

CHECKPOINT_HELP = ("Pretraining workdir, its checkpoints/ directory or one "
                   "checkpoints/<step> directory.")


def fail(message: str):
  """Bad input: one `error:` line on stderr, exit status 2, no traceback."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl's flag parser with a bad flag as one `error:` line (for
  `app.run(..., flags_parser=parse_flags)`)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).splitlines()[0])


def reject_extra_arguments(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
