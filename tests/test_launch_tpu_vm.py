"""launch/tpu_vm.py: the gcloud commands it prints with --dry-run are the ones
it runs (recorded by a stub gcloud on PATH), and bad input is one line."""

import json
import os
import shlex
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "launch", "tpu_vm.py")
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"

SLICES = {
    "v4-32": dict(name="pod-v4", zone="us-central2-b",
                  version="tpu-ubuntu2204-base", project="my-proj"),
    "v3-8": dict(name="vm-v3", zone="europe-west4-a",
                 version="tpu-ubuntu2204-base", project=None),
}


def launch(*args, path, env_extra=None):
  env = dict(os.environ, PATH=path, **(env_extra or {}))
  return subprocess.run([sys.executable, SCRIPT, *args], env=env,
                        capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture
def no_gcloud(tmp_path):
  empty = tmp_path / "empty_bin"
  empty.mkdir()
  return str(empty)


@pytest.fixture
def stub_gcloud(tmp_path):
  """A `gcloud` that appends its argv (JSON) to a file and exits with
  GCLOUD_STUB_FAIL's status when its verb (create/ssh/...) is named there."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = tmp_path / "gcloud_calls.jsonl"
  stub = bin_dir / "gcloud"
  stub.write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(record)!r}, "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
fail = os.environ.get("GCLOUD_STUB_FAIL", "")
sys.exit(7 if fail and fail in sys.argv[1:5] else 0)
""")
  stub.chmod(0o755)

  def calls():
    if not record.exists():
      return []
    return [["gcloud", *json.loads(l)] for l in record.read_text().splitlines()]
  return str(bin_dir), calls


def common_flags(vm):
  flags = [f"--name={vm['name']}", f"--zone={vm['zone']}"]
  if vm["project"]:
    flags.append(f"--project={vm['project']}")
  return flags


def command_lines(stdout):
  return [shlex.split(l) for l in stdout.splitlines()
          if l.startswith("gcloud ")]


def where(vm):
  flags = [f"--zone={vm['zone']}"]
  if vm["project"]:
    flags.append(f"--project={vm['project']}")
  return flags


def remote(command):
  """The --command=... of an ssh command line."""
  found = [a for a in command if a.startswith("--command=")]
  assert len(found) == 1, command
  return found[0][len("--command="):]


def all_args(accelerator, vm, *extra):
  return ["all", *common_flags(vm), *extra, f"--accelerator-type={accelerator}",
          f"--version={vm['version']}", "--spot",
          "--config=configs/simclr.py:imagenet",
          "--workdir=gs://my-bucket/runs/r50",
          "--data-dir=gs://my-bucket/tensorflow_datasets",
          "--", "--config.num_epochs=10"]


def check_lifecycle(commands, accelerator, vm):
  """create, scp, ssh setup, ssh run, delete, with the right flags."""
  name = vm["name"]
  create, scp, setup, run, delete = commands
  assert create == [*TPU_VM, "create", name,
                    f"--accelerator-type={accelerator}",
                    f"--version={vm['version']}", *where(vm), "--spot"]
  assert scp[:5] == [*TPU_VM, "scp"]
  assert scp[6] == f"{name}:contrastive_jax_src.tar.gz"
  assert "--worker=all" in scp and all(f in scp for f in where(vm))
  for ssh in (setup, run):
    assert ssh[:6] == [*TPU_VM, "ssh", name]
    assert "--worker=all" in ssh and all(f in ssh for f in where(vm))
  assert '"jax[tpu]"' in remote(setup) and f"-f {FIND_LINKS}" in remote(setup)
  assert "-e $HOME/contrastive_jax" in remote(setup)
  assert ("TFDS_DATA_DIR=gs://my-bucket/tensorflow_datasets nohup "
          "$HOME/contrastive_jax_venv/bin/python -m contrastive_jax.main "
          "--config=configs/simclr.py:imagenet "
          "--workdir=gs://my-bucket/runs/r50 --distributed=true "
          "--config.num_epochs=10"
          ) in remote(run)
  assert "wait $pid" in remote(run)  # `all` follows the run to its end
  assert delete == [*TPU_VM, "delete", name, "--quiet", *where(vm)]


@pytest.mark.parametrize("accelerator", sorted(SLICES))
def test_dry_run_prints_the_lifecycle_without_gcloud(accelerator, no_gcloud):
  vm = SLICES[accelerator]
  result = launch(*all_args(accelerator, vm, "--dry-run"), path=no_gcloud)
  assert result.returncode == 0, result.stderr
  check_lifecycle(command_lines(result.stdout), accelerator, vm)
  assert "# local: pack" in result.stdout


@pytest.mark.parametrize("accelerator", sorted(SLICES))
def test_real_run_issues_exactly_the_dry_run_commands(accelerator,
                                                      stub_gcloud, tmp_path):
  vm = dict(SLICES[accelerator], name=f"t-{tmp_path.name[-12:].lower()}")
  path, calls = stub_gcloud
  dry = launch(*all_args(accelerator, vm, "--dry-run"), path=path)
  assert calls() == []  # a dry run calls nothing
  real = launch(*all_args(accelerator, vm), path=path)
  assert real.returncode == 0, real.stderr
  assert calls() == command_lines(dry.stdout)
  check_lifecycle(calls(), accelerator, vm)
  # The copied tree: the project's files, not git's or a venv's.
  tarball = calls()[1][5]
  try:
    with tarfile.open(tarball) as tar:
      names = set(tar.getnames())
  finally:
    os.remove(tarball)
  assert {"setup.py", "configs/simclr.py", "contrastive_jax/main.py",
          "launch/tpu_vm.py"} <= names
  assert not any(n.startswith((".git/", ".venv/")) for n in names)


def test_each_command_alone(stub_gcloud):
  path, calls = stub_gcloud
  vm = ["--name=pod", "--zone=us-central2-b"]
  steps = [
      ["create", *vm, "--accelerator-type=v4-32",
       "--version=tpu-ubuntu2204-base", "--preemptible"],
      ["setup", *vm, "--git=https://example.com/contrastive_jax.git",
       "--ref=v1.0"],
      ["run", *vm, "--config=configs/simclr.py:cifar10",
       "--workdir=gs://b/run"],
      ["logs", *vm, "--follow", "--lines=20"],
      ["delete", *vm],
  ]
  for args in steps:
    result = launch(*args, path=path)
    assert result.returncode == 0, result.stderr
  create, setup, run, logs, delete = calls()
  assert create[-1] == "--preemptible"
  assert "git clone https://example.com/contrastive_jax.git" in remote(setup)
  assert "fetch --quiet origin v1.0" in remote(setup)
  assert "TFDS_DATA_DIR" not in remote(run)  # not given: not set
  assert remote(run).endswith('echo "started on $(hostname), log: '
                              '$HOME/contrastive_jax_run.log"')
  assert remote(logs).startswith(
      "tail -n 20 -F $HOME/contrastive_jax_run.log")
  for command in (setup, run, logs):
    assert command[4] == "ssh" and "--worker=all" in command
  assert delete[4] == "delete" and "--quiet" in delete


def test_all_deletes_the_vm_when_the_run_fails(stub_gcloud, tmp_path):
  path, calls = stub_gcloud
  vm = dict(SLICES["v3-8"], name="failing")
  result = launch(*all_args("v3-8", vm), path=path,
                  env_extra={"GCLOUD_STUB_FAIL": "ssh"})
  assert result.returncode == 7
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  verbs = [c[4] for c in calls()]
  assert verbs == ["create", "scp", "ssh", "delete"]  # setup failed
  os.remove(calls()[1][5])


@pytest.mark.parametrize("args,message", [
    (["create", "--name=x", "--zone=z"],
     "the following arguments are required: --accelerator-type, --version"),
    (["run", "--name=x", "--zone=z", "--config=c.py"],
     "the following arguments are required: --workdir"),
    (["run", "--name=x", "--zone=z", "--config=c.py", "--workdir=/tmp/run"],
     "--workdir=/tmp/run must be a gs:// path"),
    (["delete", "--zone=z"], "the following arguments are required: --name"),
    ([], "the following arguments are required: COMMAND"),
    (["create", "--name=x", "--zone=z", "--accelerator-type=v3-8",
      "--version=v", "--spot", "--preemptible"],
     "--spot and --preemptible exclude each other"),
    (["delete", "--name=x", "--zone=z"], "gcloud is not on PATH"),
    # Flags after -- go to contrastive_jax.main: a misplaced --dry-run must
    # not start a real run.
    (["run", "--name=x", "--zone=z", "--config=c.py", "--workdir=gs://b/r",
      "--", "--dry-run"], "--dry-run after --"),
    # Checked here: a dry run used to say nothing, a real one to fail on
    # every worker once the VM was up.
    (["run", "--name=x", "--zone=z", "--config=configs/nothere.py:imagenet",
      "--workdir=gs://b/r", "--dry-run"],
     "--config=configs/nothere.py:imagenet: no such file configs/nothere.py "
     "in "),
    (["run", "--name=x", "--zone=z", "--config=configs/simclr.py:nope",
      "--workdir=gs://b/r", "--dry-run"],
     "--config=configs/simclr.py:nope: ValueError: unknown simclr config "
     "variant 'nope'"),
])
def test_bad_input_is_one_clear_line(args, message, no_gcloud):
  result = launch(*args, path=no_gcloud)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert message in lines[0]
  assert result.stdout == ""
