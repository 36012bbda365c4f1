"""The worker supervisor with stand-in workers: what reaches the user, and the status.

The real runtime's messages are exercised in test_multiprocess.py; here each
way a worker can end is played by a few lines of Python, fast and exactly.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jaxgen import supervise

# The supervisor forks its worker (preexec_fn) from a process that has not
# started JAX; this test process has, which only makes Python warn.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

START = "jaxgen: process 1 of 2, local devices [cpu:0], coordinator h:1 (test)"
# What XLA's runtime prints on process 0 when task 1 stops sending heartbeats.
SERVICE_LOST = ("E1130 09:18:36.529832 12528 coordination_service.cc:1549] Use error polling "
                "to propagate the following error to all tasks: UNAVAILABLE: The following "
                "tasks are unhealthy (stopped sending heartbeats):\n1\nThe tasks have crashed.")
CLIENT_FATAL = ("F1130 09:17:55.444393 12038 client.h:80] Terminating process because the JAX "
                "distributed service detected fatal errors. This most likely indicates that "
                "another task died")


def _run_worker(code: str, capfd, process_id: int = 1, show_all: bool = False):
  argv = [sys.executable, "-c", textwrap.dedent(code)]
  status = supervise.run(argv, process_id, "runs/x", show_all=show_all,
                         join_failure="could not join (test)")
  out, err = capfd.readouterr()
  return status, out, err


def _worker(*, stdout=(), stderr=(), then="pass") -> str:
  return (f"import os, signal, sys\n"
          f"for line in {list(stdout)!r}: print(line, flush=True)\n"
          f"for line in {list(stderr)!r}: print(line, file=sys.stderr, flush=True)\n"
          f"{then}\n")


def test_success_shows_output_and_holds_library_noise(capfd):
  status, out, err = _run_worker(_worker(
      stdout=[START, "[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of "
              "connected peer ranks is : 1", "step 1/2 | loss 4.0"],
      stderr=["W1130 09:17:17.609 11021 preemption_notifier.cc:90] SIGTERM caught",
              "jaxgen: warning: something jaxgen says"]), capfd, process_id=0)
  assert status == 0
  assert out == f"{START}\nstep 1/2 | loss 4.0\n"
  assert err == "jaxgen: warning: something jaxgen says\n"


def test_other_processes_pass_only_jaxgen_lines(capfd):
  # Gloo's C++ writes, split by another thread's, once left a bare "1" on its own line.
  status, out, _ = _run_worker(_worker(
      stdout=[START, "[Gloo] Rank 1 is connected to 1 peer ranks. Expected number of "
              "connected peer ranks is : ", "1", "jaxgen: process 1 stopped at step 3"]),
      capfd, process_id=1)
  assert status == 0
  assert out == f"{START}\njaxgen: process 1 stopped at step 3\n"


def test_verbosity_shows_everything(capfd):
  status, out, err = _run_worker(_worker(stdout=["[Gloo] Rank 0"], stderr=["W1130 noise"]),
                                 capfd, show_all=True)
  assert status == 0 and "[Gloo] Rank 0" in out and "W1130 noise" in err


def test_lost_process_named_by_the_service_is_one_line(capfd):
  status, out, err = _run_worker(_worker(stdout=[START], stderr=[SERVICE_LOST, CLIENT_FATAL],
                                         then="os.abort()"), capfd, process_id=0)
  assert status == 1
  assert err.splitlines() == [
      "jaxgen: error: process 1 was lost (it exited or stopped responding), so process 0 "
      "stops too; see that process's own log for why, then run the same launch again: every "
      "process resumes from the newest complete checkpoint in runs/x/checkpoints"]


def test_lost_coordinator_is_named_on_the_others(capfd):
  status, _, err = _run_worker(_worker(
      stdout=[START], stderr=["W1130 preemption_sync_manager.cc:147] Failed to retrieve "
                              "preemption notice from coordination service: UNAVAILABLE: "
                              "Socket closed", CLIENT_FATAL], then="os.abort()"), capfd)
  assert status == 1 and len(err.splitlines()) == 1
  assert err.startswith("jaxgen: error: process 0 (the coordinator) was lost")


def test_abort_before_joining_is_a_join_failure(capfd):
  status, _, err = _run_worker(_worker(stderr=[CLIENT_FATAL], then="os.abort()"), capfd)
  assert (status, err) == (1, "jaxgen: error: could not join (test)\n")


def test_the_workers_own_error_line_is_all(capfd):
  status, _, err = _run_worker(_worker(
      stdout=[START], stderr=["some library warning", "jaxgen: error: bad data"],
      then="sys.exit(1)"), capfd)
  assert (status, err) == (1, "jaxgen: error: bad data\n")


def test_a_crash_shows_what_was_held(capfd):
  status, _, err = _run_worker(_worker(stdout=[START], then="raise RuntimeError('boom')"),
                               capfd)
  assert status == 1 and "Traceback" in err and "RuntimeError: boom" in err


def test_a_killed_worker_is_one_line(capfd):
  status, _, err = _run_worker(_worker(stdout=[START, "[Gloo] Rank 0"],
                                       then="os.kill(os.getpid(), signal.SIGKILL)"), capfd)
  assert status == 128 + signal.SIGKILL
  assert len(err.splitlines()) == 1 and "was killed by SIGKILL" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_reach_the_worker_once(tmp_path, sig):
  # The worker counts the signals it gets, and exits 0 after the first second.
  worker = textwrap.dedent(f"""
      import signal, sys, time
      got = []
      signal.signal({int(sig)}, lambda s, f: got.append(s))
      print("ready", flush=True)
      deadline = time.time() + 20
      while not got and time.time() < deadline:
        time.sleep(0.05)
      time.sleep(1)
      print("signals", len(got), flush=True)
  """)
  runner = textwrap.dedent(f"""
      import sys
      from jaxgen import supervise
      sys.exit(supervise.run([sys.executable, "-c", {worker!r}], 0, "w", show_all=False,
                             join_failure="x"))
  """)
  # Its own session stands in for a terminal's process group: the signal goes to the
  # whole group, as a Ctrl-C would, and the worker must still get it exactly once.
  proc = subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE, text=True,
                          start_new_session=True, cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))))
  try:
    assert proc.stdout.readline() == "ready\n"
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=30)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert proc.returncode == 0 and out == "signals 1\n"


def test_the_worker_dies_with_its_supervisor(tmp_path):
  pid_file = tmp_path / "worker.pid"
  runner = textwrap.dedent(f"""
      import sys
      from jaxgen import supervise
      code = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
      supervise.run([sys.executable, "-c", code], 0, "w", show_all=False, join_failure="x")
  """)
  proc = subprocess.Popen([sys.executable, "-c", runner], cwd=os.path.dirname(
      os.path.dirname(os.path.abspath(__file__))))
  deadline = time.monotonic() + 30
  while not (pid_file.exists() and pid_file.read_text()):
    assert time.monotonic() < deadline
    time.sleep(0.05)
  worker = int(pid_file.read_text())
  proc.kill()
  proc.wait()
  deadline = time.monotonic() + 10
  while _alive(worker):
    assert time.monotonic() < deadline, "the worker outlived its supervisor"
    time.sleep(0.05)


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split()[2] != "Z"
  except FileNotFoundError:
    return False
