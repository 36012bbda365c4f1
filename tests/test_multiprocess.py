"""One job from several real processes on 127.0.0.1, each with its own CPU devices.

A 2-process run (2 devices each) must train exactly as 1 process with 4
devices; a SIGTERM to one process stops both at the same step with one
checkpoint; a SIGKILLed process ends the other within the heartbeat timeout
with one line; checkpoints move between 1 and 2 processes; relaunches
continue with the uninterrupted run's losses.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from jaxgen.errors import UserError
from tests.helpers import one_line, write_corpus, xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "local_multiprocess.sh"
STEPS = 40
TIMEOUT = 180  # per process; a 2-core machine runs both processes side by side


def _args(corpus: str, workdir: pathlib.Path, *extra: str) -> list[str]:
  return [
      sys.executable, "-m", "jaxgen", "train", f"--config={ROOT}/configs/shakespeare_char_cpu.py",
      f"--workdir={workdir}", f"--config.data.source={corpus}", "--config.data.seq_len=32",
      "--config.model.num_layers=2", "--config.model.embed_dim=32", "--config.model.num_heads=4",
      f"--config.train.steps={STEPS}", "--config.train.batch_size=8",
      "--config.train.warmup_steps=5", "--config.train.log_every=1",
      "--config.train.compilation_cache_dir=", "--config.mesh.data=2", "--config.mesh.fsdp=2",
      f"--config.eval.every_steps={STEPS}", "--config.eval.steps=2",
      "--config.checkpoint.every_steps=0", "--config.sample.num_tokens=0",
      "--config.distributed.heartbeat_timeout_s=10", *extra]


_JOB_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                  "JAX_LOCAL_DEVICE_IDS", "JAX_PLATFORMS", "XLA_FLAGS")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  # The suite's compilation cache stays (conftest.py); another job's settings go.
  env = {k: v for k, v in os.environ.items() if k not in _JOB_VARIABLES}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices),
             PYTHONPATH=str(ROOT), **{k: str(v) for k, v in extra.items()})
  return env


class Job:
  """The processes of one job started the way launch/k8s and SLURM start them:
  the same command with JAX_* variables, output to files."""

  def __init__(self, args, workdir: pathlib.Path, num_processes: int, devices: int):
    port = _free_port()
    self.logs = [workdir.parent / f"{workdir.name}.p{i}.{time.monotonic_ns()}.log"
                 for i in range(num_processes)]
    self.procs = []
    for i, log in enumerate(self.logs):
      env = _env(devices) if num_processes == 1 else _env(
          devices, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
          JAX_NUM_PROCESSES=num_processes, JAX_PROCESS_ID=i)
      with open(log, "w") as f:
        self.procs.append(subprocess.Popen(args, env=env, stdout=f, stderr=subprocess.STDOUT,
                                           cwd=ROOT, start_new_session=True))

  def output(self, i: int) -> str:
    return self.logs[i].read_text()

  def wait_for(self, i: int, text: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while text not in self.output(i):
      assert time.monotonic() < deadline, f"no {text!r} from process {i}:\n{self.output(i)}"
      assert self.procs[i].poll() is None, f"process {i} ended:\n{self.output(i)}"
      time.sleep(0.05)

  def wait(self, timeout: float = TIMEOUT) -> list[int]:
    try:
      return [p.wait(timeout=timeout) for p in self.procs]
    finally:
      self.kill()

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture
def job_factory():
  jobs = []

  def start(*args, **kw) -> Job:
    jobs.append(Job(*args, **kw))
    return jobs[-1]

  yield start
  for job in jobs:
    job.kill()


def _losses(workdir: pathlib.Path, key: str = "train_loss") -> dict[int, float]:
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r[key] for r in records if key in r}


def _checkpoints(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run: 1 process with 4 devices, and the corpus."""
  tmp = tmp_path_factory.mktemp("mp")
  corpus = write_corpus(tmp / "corpus.txt")
  workdir = tmp / "one"
  job = Job(_args(corpus, workdir), workdir, 1, 4)
  assert job.wait() == [0], job.output(0)
  return corpus, workdir


@pytest.mark.slow
def test_two_processes_train_as_one_with_all_devices(reference, tmp_path):
  corpus, one = reference
  workdir = tmp_path / "two"
  env = {k: v for k, v in _env(1).items() if k not in _JOB_VARIABLES}
  run = subprocess.run(["bash", str(LAUNCH), "2", "2", "--", *_args(corpus, workdir)], env=env,
                       cwd=ROOT, capture_output=True, text=True, timeout=2 * TIMEOUT)
  assert run.returncode == 0, run.stdout + run.stderr
  want, got = _losses(one), _losses(workdir)
  assert sorted(got) == list(range(1, STEPS + 1))  # each step written once
  assert max(abs(got[s] - want[s]) for s in want) < 1e-5
  for key in ("val_loss", "val_loss_full_split"):
    assert abs(_losses(workdir, key)[STEPS] - _losses(one, key)[STEPS]) < 1e-5, key
  # Process 1 says only where it stands; process 0 writes everything else.
  lines = (run.stdout + run.stderr).splitlines()
  assert [line for line in lines if line.startswith("[1] ")] == [next(
      line for line in lines if line.startswith("[1] jaxgen: process 1 of 2, "))]
  start = next(line for line in lines if line.startswith("[0] jaxgen: process 0 of 2, "))
  assert "local devices [cpu:0,cpu:1]" in start and "coordinator 127.0.0.1:" in start
  assert f"[0] step {STEPS}/{STEPS} | loss" in run.stdout
  assert "Gloo" not in run.stdout + run.stderr  # the collectives' connection log is held
  assert _checkpoints(workdir) == [STEPS]


def test_concat_and_pack_refuse_another_process_count_in_one_line():
  from jaxgen import config as config_lib
  from jaxgen import tasks
  from jaxgen.train import loop
  cfg = config_lib.base_config()
  for mode in ("concat", "pack"):
    cfg.data.mode = mode
    with pytest.raises(UserError) as err:
      loop._reposition(tasks.task_of(cfg.data), cfg, None, {"processes": 2}, 10)
    message = one_line(err)
    assert "written by 2 process(es)" in message and "resume with 2 process(es)" in message
    assert f"data.mode={mode!r}" in message and "data.mode='windows'" in message


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step(reference, tmp_path, job_factory):
  corpus, one = reference
  workdir = tmp_path / "term"
  job = job_factory(_args(corpus, workdir), workdir, 2, 2)
  job.wait_for(0, "step 3/")
  job.procs[1].send_signal(signal.SIGTERM)  # process 1 only: it must tell process 0
  assert job.wait() == [0, 0], job.output(0) + job.output(1)
  stopped = [_stopped_step(job.output(i)) for i in range(2)]
  assert stopped[0] == stopped[1] and 3 <= stopped[0] < STEPS, stopped
  assert _checkpoints(workdir) == [stopped[0]]
  # The same launch continues; so does one process with all the devices.
  again = job_factory(_args(corpus, workdir), workdir, 1, 4)
  assert again.wait() == [0], again.output(0)
  assert f"resuming from {workdir}/checkpoints/{stopped[0]}" in again.output(0)
  want, got = _losses(one), _losses(workdir)
  assert max(abs(got[s] - want[s]) for s in range(stopped[0] + 1, STEPS + 1)) < 1e-5


@pytest.mark.slow
def test_lost_process_ends_the_job_in_one_line_and_relaunch_resumes(reference, tmp_path,
                                                                     job_factory):
  corpus, one = reference
  workdir = tmp_path / "kill"
  # One process first, stopped part-way: the relaunch moves it to two.
  first = job_factory(_args(corpus, workdir), workdir, 1, 4)
  first.wait_for(0, "step 3/")
  first.procs[0].send_signal(signal.SIGTERM)
  assert first.wait() == [0], first.output(0)
  saved = _checkpoints(workdir)[-1]

  job = job_factory(_args(corpus, workdir, "--config.checkpoint.every_steps=2"), workdir, 2, 2)
  job.wait_for(0, f"step {saved + 3}/")
  job.procs[1].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  status = job.procs[0].wait(timeout=90)
  waited = time.monotonic() - killed_at
  assert status != 0 and waited < 60, (status, waited)
  lines = [line for line in job.output(0).splitlines() if line.startswith("jaxgen: error")]
  assert len(lines) == 1 and "process 1 was lost" in lines[0], job.output(0)
  assert "Traceback" not in job.output(0) and "stack trace" not in job.output(0)
  job.kill()

  again = job_factory(_args(corpus, workdir, "--config.checkpoint.every_steps=2"), workdir, 2, 2)
  assert again.wait() == [0, 0], again.output(0) + again.output(1)
  want, got = _losses(one), _losses(workdir)
  assert max(abs(got[s] - want[s]) for s in range(1, STEPS + 1)) < 1e-5


@pytest.mark.slow
def test_unreachable_coordinator_fails_in_one_line(tmp_path):
  corpus = write_corpus(tmp_path / "corpus.txt")
  env = _env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES=2,
             JAX_PROCESS_ID=1)
  start = time.monotonic()
  run = subprocess.run(_args(corpus, tmp_path / "w", "--config.distributed."
                             "initialization_timeout_s=3"), env=env, capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
  assert run.returncode == 1 and time.monotonic() - start < 30
  assert run.stderr.count("\n") == 1, run.stderr
  assert run.stderr.startswith("jaxgen: error: process 1 of 2 could not join the job at "
                               "coordinator 127.0.0.1:")
  assert not (tmp_path / "w").exists()


def test_launcher_prefixes_lines_and_stops_all_on_the_first_failure(tmp_path):
  script = ("echo hello from $JAX_PROCESS_ID of $JAX_NUM_PROCESSES; "
            "if [ $JAX_PROCESS_ID = 1 ]; then sleep 2; exit 3; fi; sleep 60")
  start = time.monotonic()
  run = subprocess.run(["bash", str(LAUNCH), "3", "2", "--", "bash", "-c", script],
                       capture_output=True, text=True, timeout=50)
  assert run.returncode == 3 and time.monotonic() - start < 30
  assert sorted(run.stdout.splitlines()) == [f"[{i}] hello from {i} of 3" for i in range(3)]


def test_launcher_dry_run(tmp_path):
  run = subprocess.run(["bash", str(LAUNCH), "--dry-run", "--port=1234", "2", "4", "--",
                        "jaxgen", "train", "--config=configs/shakespeare_char_cpu.py",
                        "--config.sample.prompt=to be"],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, XLA_FLAGS="--xla_dump_to=/tmp/x "
                                "--xla_force_host_platform_device_count=8"))
  assert run.returncode == 0, run.stderr
  assert run.stdout == "".join(
      f"[{i}] JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=4\\ "
      f"--xla_dump_to=/tmp/x JAX_COORDINATOR_ADDRESS=127.0.0.1:1234 JAX_NUM_PROCESSES=2 "
      f"JAX_PROCESS_ID={i} jaxgen train --config=configs/shakespeare_char_cpu.py "
      f"--config.sample.prompt=to\\ be\n" for i in range(2))


def _stopped_step(output: str) -> int:
  line = next(line for line in output.splitlines() if "stopped at step" in line)
  return int(line.split("stopped at step ")[1].split()[0])
