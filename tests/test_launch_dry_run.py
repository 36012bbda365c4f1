"""launch/slurm.sbatch and launch/tpu_pod.sh: --dry-run prints exactly what they would run.

Golden outputs: the expected text is written out below, with the parts that vary from
machine to machine (the repository path, the current directory, the commit) normalised.
Each script runs in a controlled environment, so what the caller happens to have set
(XLA_FLAGS, NCCL_DEBUG, LIBTPU_INIT_ARGS, ...) cannot change the text.
"""

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

from tests.launch_common import LAUNCH, REPO, run

SLURM = LAUNCH / "slurm.sbatch"
TPU = LAUNCH / "tpu_pod.sh"

SLURM_DEFAULT = """\
export XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
export NCCL_DEBUG=WARN
export PYTHONUNBUFFERED=1
mkdir -p $CWD/logs
srun --kill-on-bad-exit=1 --unbuffered --output=$CWD/logs/jaxgen-%j-%t.log \
jaxgen train --config=configs/shakespeare_char_cpu.py --workdir=/shared/runs/a \
--config.data.source='text:/data/my corpus.txt'
"""

SLURM_USER_SETTINGS = """\
export XLA_FLAGS='--xla_gpu_enable_latency_hiding_scheduler=true --xla_dump_to=/tmp/dump'
export XLA_PYTHON_CLIENT_MEM_FRACTION=.8
export NCCL_DEBUG=INFO
export PYTHONUNBUFFERED=1
mkdir -p /shared/logs
srun --kill-on-bad-exit=1 --unbuffered --output=/shared/logs/jaxgen-%j-%t.log \
jaxgen train --workdir=/shared/runs/a
"""

_LIBTPU = ("--xla_tpu_enable_data_parallel_all_reduce_opt=true "
           "--xla_tpu_data_parallel_opt_different_sized_ops=true "
           "--xla_tpu_enable_async_collective_fusion=true "
           "--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true "
           "--xla_tpu_enable_async_collective_fusion_multiple_steps=true "
           "--xla_tpu_overlap_compute_collective_tc=true "
           "--xla_enable_async_all_gather=true")

TPU_DEFAULT = f"""\
git -C $REPO archive --format=tar.gz --output=$TMPDIR/jaxgen-tpu-pod-1.tar.gz $TREE
gcloud compute tpus tpu-vm scp $TMPDIR/jaxgen-tpu-pod-1.tar.gz pod-1:jaxgen-src.tar.gz \
--worker=all --zone=us-east5-a
gcloud compute tpus tpu-vm ssh pod-1 --worker=all --zone=us-east5-a \
--command='set -e; mkdir -p ~/jaxgen; tar -xzf ~/jaxgen-src.tar.gz -C ~/jaxgen; \
python3 -m pip install -q -e ~/jaxgen '\\''jax[tpu]'\\'''
gcloud compute tpus tpu-vm ssh pod-1 --worker=all --zone=us-east5-a \
--command='cd ~/jaxgen && export PATH="$HOME/.local/bin:$PATH" PYTHONUNBUFFERED=1 \
LIBTPU_INIT_ARGS='\\''{_LIBTPU}'\\'' && exec jaxgen train --config=configs/llama_1b.py \
--workdir=/mnt/shared/runs/llama --config.train.steps=100'
"""

TPU_OPTIONS = """\
git -C $REPO archive --format=tar.gz --output=$TMPDIR/jaxgen-tpu-pod-1.tar.gz $TREE
gcloud compute tpus tpu-vm scp $TMPDIR/jaxgen-tpu-pod-1.tar.gz pod-1:jaxgen-src.tar.gz \
--worker=all --zone=us-east5-a --project=my-proj
gcloud compute tpus tpu-vm ssh pod-1 --worker=all --zone=us-east5-a --project=my-proj \
--command='set -e; mkdir -p ~/jaxgen; tar -xzf ~/jaxgen-src.tar.gz -C ~/jaxgen'
gcloud compute tpus tpu-vm ssh pod-1 --worker=all --zone=us-east5-a --project=my-proj \
--command='cd ~/jaxgen && export PATH="$HOME/.local/bin:$PATH" PYTHONUNBUFFERED=1 \
LIBTPU_INIT_ARGS='\\'''\\'' && exec env '\\''A=b c'\\'' jaxgen train'
"""


def _bin_without_gcloud(tmp_path) -> str:
  """A PATH holding only what the scripts call besides gcloud: proof they do not need it."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  for tool in ("bash", "git", "dirname", "mkdir", "tar", "gzip", "cp", "touch"):
    (bin_dir / tool).symlink_to(shutil.which(tool))
  (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
  return str(bin_dir)


def _script(script, *args, env, cwd):
  return run(["/bin/bash", str(script), *args], timeout=60, env=env, cwd=cwd)


def test_slurm_dry_run_prints_the_srun_line_and_runs_nothing(tmp_path):
  env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
  r = _script(SLURM, "--dry-run", "--", "jaxgen", "train",
              "--config=configs/shakespeare_char_cpu.py", "--workdir=/shared/runs/a",
              "--config.data.source=text:/data/my corpus.txt", env=env, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert r.stdout.replace(str(tmp_path), "$CWD") == SLURM_DEFAULT
  assert r.stderr == ""
  assert not (tmp_path / "logs").exists()


def test_slurm_dry_run_keeps_the_users_settings(tmp_path):
  env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XLA_FLAGS": "--xla_dump_to=/tmp/dump",
         "NCCL_DEBUG": "INFO", "XLA_PYTHON_CLIENT_MEM_FRACTION": ".8",
         "SLURM_SUBMIT_DIR": "/home/me/jaxgen", "JAXGEN_LOG_DIR": "/shared/logs"}
  r = _script(SLURM, "--dry-run", "--", "jaxgen", "train", "--workdir=/shared/runs/a",
              env=env, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert r.stdout == SLURM_USER_SETTINGS


def test_slurm_dry_run_lines_are_the_exact_commands(tmp_path):
  """Pasted into a shell, the printed srun line gives srun the very words it was given."""
  words = ["jaxgen", "train", "--workdir=/a b", "it's", "", "$HOME", "*", "--x=~/y", "a\\b"]
  env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
  r = _script(SLURM, "--dry-run", "--", *words, env=env, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  srun_line = r.stdout.splitlines()[-1]
  replay = subprocess.run(["bash", "-c", 'srun() { printf "%s\\0" "$@"; }; eval "$1"', "-",
                           srun_line], capture_output=True, text=True, check=True, cwd=tmp_path)
  assert replay.stdout.split("\0")[:-1][3:] == words


def test_slurm_usage_errors(tmp_path):
  env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
  r = _script(SLURM, "--dry-run", env=env, cwd=tmp_path)
  assert r.returncode == 2
  assert r.stderr.splitlines()[0] == "slurm.sbatch: error: no command after --"
  r = _script(SLURM, "--nodes=2", "--", "jaxgen", env=env, cwd=tmp_path)
  assert r.returncode == 2
  assert r.stderr.splitlines()[0] == ("slurm.sbatch: error: unknown option --nodes=2 "
                                      "(the command goes after --)")


def _tpu_normalise(text, tmp_path):
  text = text.replace(str(tmp_path), "$TMPDIR").replace(str(REPO), "$REPO")
  return re.sub(r"\b[0-9a-f]{40}\b", "$TREE", text)


def test_tpu_pod_dry_run_prints_copy_install_and_run_without_gcloud(tmp_path):
  env = {"PATH": _bin_without_gcloud(tmp_path), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
  r = _script(TPU, "--dry-run", "--tpu=pod-1", "--zone=us-east5-a", "--", "jaxgen", "train",
              "--config=configs/llama_1b.py", "--workdir=/mnt/shared/runs/llama",
              "--config.train.steps=100", env=env, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert _tpu_normalise(r.stdout, tmp_path) == TPU_DEFAULT
  assert not (tmp_path / "jaxgen-tpu-pod-1.tar.gz").exists()


def test_tpu_pod_dry_run_with_project_no_install_and_empty_libtpu_args(tmp_path):
  env = {"PATH": _bin_without_gcloud(tmp_path), "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
         "LIBTPU_INIT_ARGS": ""}
  r = _script(TPU, "--dry-run", "--tpu=pod-1", "--zone=us-east5-a", "--project=my-proj",
              "--install=", "--", "env", "A=b c", "jaxgen", "train", env=env, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert _tpu_normalise(r.stdout, tmp_path) == TPU_OPTIONS


def test_tpu_pod_without_gcloud_fails_in_one_line(tmp_path):
  env = {"PATH": _bin_without_gcloud(tmp_path), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
  r = _script(TPU, "--tpu=pod-1", "--zone=z", "--", "jaxgen", "train", env=env, cwd=tmp_path)
  assert r.returncode == 1
  assert r.stdout == ""
  assert len(r.stderr.splitlines()) == 1
  assert r.stderr.startswith("tpu_pod.sh: error: gcloud not found: install the Google Cloud CLI")
  assert list(tmp_path.glob("*.tar.gz")) == []


def test_tpu_pod_usage_errors(tmp_path):
  env = {"PATH": _bin_without_gcloud(tmp_path), "HOME": str(tmp_path)}
  for args, message in [
      (["--zone=z", "--", "x"], "--tpu=NAME is required (the TPU VM's name)"),
      (["--tpu=t", "--", "x"], "--zone=ZONE is required (the TPU VM's zone)"),
      (["--tpu=t", "--zone=z"], "no command after --"),
      (["--tpu", "t", "--", "x"], "unknown option --tpu (options take --name=value; "
                                  "the command goes after --)")]:
    r = _script(TPU, "--dry-run", *args, env=env, cwd=tmp_path)
    assert r.returncode == 2, args
    assert r.stderr.splitlines()[0] == f"tpu_pod.sh: error: {message}"


_FAKE_GCLOUD = """\
#!/bin/bash
# Stands in for gcloud: records each call; scp copies into $HOME (one worker, this machine);
# ssh runs --command in a login-like shell from $HOME, as the worker's sshd would.
printf '%s\\n' "$*" >>"$GCLOUD_CALLS"
case $4 in
  scp) cp "$5" "$HOME/${6#*:}" ;;
  ssh) for a in "$@"; do
         case $a in --command=*) cd "$HOME" && exec bash -c "${a#--command=}" ;; esac
       done ;;
esac
"""


def test_tpu_pod_runs_the_printed_commands_on_a_stand_in_worker(tmp_path):
  """With gcloud replaced by a stub that plays one worker on this machine, the script ships
  the repository, runs the install command and then the command from ~/jaxgen with the
  documented environment; its commands are the ones --dry-run prints."""
  bin_dir = pathlib.Path(_bin_without_gcloud(tmp_path))
  (bin_dir / "gcloud").write_text(_FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(stat.S_IRWXU)
  home = tmp_path / "home"
  home.mkdir()
  env = {"PATH": str(bin_dir), "HOME": str(home), "TMPDIR": str(tmp_path),
         "GCLOUD_CALLS": str(tmp_path / "calls")}
  probe = ("import os, sys; print('ran in', os.getcwd(), os.environ['PYTHONUNBUFFERED'], "
           "os.environ['LIBTPU_INIT_ARGS'].split()[0], sys.argv[1:])")
  args = ["--tpu=pod-1", "--zone=z", "--install=touch ~/jaxgen/installed", "--",
          "python3", "-c", probe, "a b"]
  dry = _script(TPU, "--dry-run", *args, env=env, cwd=tmp_path)
  r = _script(TPU, *args, env=env, cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert (home / "jaxgen/installed").exists()
  assert (home / "jaxgen/pyproject.toml").read_text() == (REPO / "pyproject.toml").read_text()
  assert (home / "jaxgen/launch/tpu_pod.sh").exists()
  assert not (home / "jaxgen/.venv").exists()
  out = r.stdout.splitlines()
  assert out[:4] == dry.stdout.splitlines()
  assert out[4:] == [f"ran in {home}/jaxgen 1 --xla_tpu_enable_data_parallel_all_reduce_opt=true "
                     "['a b']"]
  calls = (tmp_path / "calls").read_text().splitlines()
  assert [c.split()[3:5] for c in calls] == [
      ["scp", str(tmp_path / "jaxgen-tpu-pod-1.tar.gz")], ["ssh", "pod-1"], ["ssh", "pod-1"]]
