"""The steps of each launch/tpu_vm.py command: the gcloud command lines, the
shell each worker runs, and the tarball of the source that setup copies.

A step is a gcloud argv (a list) or a LocalStep; launch/tpu_vm.py prints and
runs them. Only the standard library is used.
"""

import os
import shlex
import subprocess
import tarfile
import tempfile

# libtpu wheels matching each jax release are listed here.
LIBTPU_FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# Where things live on every worker. $HOME, not ~: it also expands inside the
# double quotes of a remote command.
REMOTE_DIR = "$HOME/contrastive_jax"
REMOTE_VENV = "$HOME/contrastive_jax_venv"
REMOTE_LOG = "$HOME/contrastive_jax_run.log"
REMOTE_TARBALL = "contrastive_jax_src.tar.gz"  # relative to the remote home
UV = "$HOME/.local/bin/uv"
# Each worker's log lines carry its hostname, so that the interleaved output
# of `--worker=all` stays readable.
PREFIX_HOST = 'sed -u "s/^/[$(hostname)] /"'


# --- gcloud command lines ----------------------------------------------------

def _tpu_vm(verb, args, *rest):
  command = ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest,
             f"--zone={args.zone}"]
  if args.project:
    command.append(f"--project={args.project}")
  return command


def _on_all_workers(args, remote_command):
  return _tpu_vm("ssh", args, args.name, "--worker=all",
                 f"--command={remote_command}")


def create_steps(args):
  command = _tpu_vm("create", args, args.name,
                    f"--accelerator-type={args.accelerator_type}",
                    f"--version={args.version}")
  if args.spot:
    command.append("--spot")
  if args.preemptible:
    command.append("--preemptible")
  return [command]


def setup_steps(args):
  """Copies or clones the project to every worker and installs it with
  jax[tpu] into a virtualenv.

  The venv's Python comes from uv, not the image: TPU runtime images ship
  the Python of their Ubuntu release (3.10 on 22.04), older than current JAX
  and this project need.
  """
  python = f"{REMOTE_VENV}/bin/python"
  install_uv = (f"(test -x {UV} || curl -LsSf https://astral.sh/uv/install.sh"
                " | sh)")
  make_venv = (f"{UV} venv --quiet --allow-existing --python "
               f"{shlex.quote(args.python)} {REMOTE_VENV}")
  if args.git:
    # A copy left by an earlier --source setup is not a clone: replace it.
    get_source = (f"(test -d {REMOTE_DIR}/.git || (rm -rf {REMOTE_DIR} && "
                  f"git clone {shlex.quote(args.git)} {REMOTE_DIR}))"
                  # FETCH_HEAD: branches, tags and commits alike, updated on
                  # every setup.
                  f" && git -C {REMOTE_DIR} fetch --quiet origin "
                  f"{shlex.quote(args.ref)}"
                  f" && git -C {REMOTE_DIR} checkout --quiet FETCH_HEAD")
    steps = []
  else:
    # A fresh copy each time: files deleted locally must not linger.
    get_source = (f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR}"
                  f" && tar -xzf $HOME/{REMOTE_TARBALL} -C {REMOTE_DIR}")
    tarball = local_tarball_path(args)
    steps = [
        LocalStep(f"pack {args.source} into {tarball}",
                  lambda: pack_source(args.source, tarball)),
        _tpu_vm("scp", args, tarball, f"{args.name}:{REMOTE_TARBALL}",
                "--worker=all"),
    ]
  pip = f"{UV} pip install --quiet --python {python}"
  remote = " && ".join([
      install_uv, make_venv, get_source,
      f'{pip} -U "jax[tpu]" -f {LIBTPU_FIND_LINKS}',
      f"{pip} -e {REMOTE_DIR}",
      # Imports only: touching the TPU here would make the hosts of a pod
      # wait for each other.
      f"{python} -c 'import jax, contrastive_jax; print(\"jax\", "
      "jax.__version__)'",
  ])
  return steps + [_on_all_workers(args, remote)]


def main_command(args):
  """The training command every worker runs, as a remote shell string."""
  env = ""
  if args.data_dir:
    env = f"TFDS_DATA_DIR={shlex.quote(args.data_dir)} "
  # Every worker joins one JAX job; on a TPU VM JAX finds the others itself.
  main_args = [f"--config={args.config}", f"--workdir={args.workdir}",
               "--distributed=true", *args.main_args]
  return (f"{env}nohup {REMOTE_VENV}/bin/python -m contrastive_jax.main "
          f"{shlex.join(main_args)} > {REMOTE_LOG} 2>&1 < /dev/null &")


def run_steps(args, *, foreground):
  """Starts training on every worker under nohup, logging to REMOTE_LOG.

  nohup keeps the run alive when the ssh connection drops. In the
  foreground the command then follows the log until the run ends and exits
  with its status; otherwise it returns at once (see `logs`).
  """
  remote = f"cd {REMOTE_DIR} || exit 1; {main_command(args)}"
  if foreground:
    remote += (f" pid=$!; tail -n +1 -F --pid=$pid {REMOTE_LOG} 2>/dev/null"
               f" | {PREFIX_HOST}; wait $pid")
  else:
    remote += f' echo "started on $(hostname), log: {REMOTE_LOG}"'
  return [_on_all_workers(args, remote)]


def logs_steps(args):
  follow = " -F" if args.follow else ""
  remote = f"tail -n {args.lines}{follow} {REMOTE_LOG} | {PREFIX_HOST}"
  return [_on_all_workers(args, remote)]


def delete_steps(args):
  return [_tpu_vm("delete", args, args.name, "--quiet")]


# --- The local copy of the source --------------------------------------------

class LocalStep:
  """A step that runs here, not through gcloud (dry runs only describe it)."""

  def __init__(self, description, fn):
    self.description = description
    self.fn = fn


def local_tarball_path(args):
  # Named after the VM, so dry runs print the same path a real run uses.
  return os.path.join(tempfile.gettempdir(),
                      f"contrastive_jax_src_{args.name}.tar.gz")


def _source_files(source):
  """Files to copy: git's view of the tree (tracked and not ignored) when
  it is a checkout, so venvs, workdirs and caches stay behind."""
  try:
    listed = subprocess.run(
        ["git", "-C", source, "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"], capture_output=True, check=True).stdout
    return [f for f in listed.decode().split("\0")
            if f and os.path.isfile(os.path.join(source, f))]
  except (OSError, subprocess.CalledProcessError):
    skip = {".git", ".venv", "workdirs", "__pycache__", ".pytest_cache"}
    files = []
    for root, dirs, names in os.walk(source):
      dirs[:] = [d for d in dirs if d not in skip and
                 not d.endswith(".egg-info")]
      files += [os.path.relpath(os.path.join(root, n), source) for n in names]
    return files


def pack_source(source, tarball):
  with tarfile.open(tarball, "w:gz") as tar:
    for name in sorted(_source_files(source)):
      tar.add(os.path.join(source, name), arcname=name)

