"""Files written whole or not at all: what export and embed write."""

import os
import shutil
import tempfile

from contrastive_jax.errors import UserError


def write_atomically(out: str, write, *, directory=False):
  """write(tmp) to a temporary file (or directory) next to `out`, renamed
  onto it when complete: a failed write leaves no half-written `out`, and
  an existing one as it was. An OSError is one UserError line."""
  parent = os.path.dirname(os.path.abspath(out))
  prefix = f".{os.path.basename(out)}."
  if directory:
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".tmp")
  else:
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=prefix, suffix=".tmp")
    os.close(fd)
  try:
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    # Temporary files are private (0600); an export is an ordinary file.
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    os.replace(tmp, out)
  except OSError as e:
    raise UserError(f"cannot write {out}: {e.strerror or e}") from e
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)
    elif os.path.exists(tmp):
      os.remove(tmp)
