"""Errors that mean "the user gave us something we cannot use".

`main` turns any of these into one line on stderr and a non-zero exit, with no
traceback: they are the user's to fix, not ours to debug. Everything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input from the user: a config value, a path, a checkpoint, data."""


class ConfigError(UserError, ValueError):
  """A config field holds a value we cannot use. The message names the field."""


class DataError(UserError):
  """A dataset is missing, unreadable, or of a shape we cannot use."""


class CheckpointError(UserError):
  """A checkpoint or workdir is missing, corrupt, or from another run."""
