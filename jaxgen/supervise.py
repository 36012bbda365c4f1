"""Runs a multi-process job's worker as a child, so its failures read as one line.

When another process of the job dies, XLA's distributed runtime aborts every
survivor from a C++ thread with a fatal log and a stack dump: nothing in
Python can catch it or say what happened. The command line therefore runs
the worker as a child process and reads its stderr:

- lines jaxgen writes ("jaxgen: ...") pass through at once;
- everything else (C++ runtime logs, library warnings, and the lines the
  Gloo collectives print on stdout) is held, and shown only if the worker fails without saying why
  itself, or with --verbosity;
- a worker aborted because the job lost a process ends with one line naming
  that process and how to resume.

SIGTERM and SIGINT reach the worker through this process: the worker sits
in its own process group, so a terminal's Ctrl-C arrives once, and it dies
with this process (PR_SET_PDEATHSIG) if this one is killed.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import threading

CHILD_ENV = "JAXGEN_WORKER"  # set in the child: it runs the job itself
_KEPT = 400  # held lines kept for a crash report

# What XLA's runtime logs when the job has lost a process.
_LOST = re.compile(r"detected fatal errors|tasks are unhealthy|stopped sending heartbeats|"
                   r"leader task was preempted/died|Polled an error from coordination service")
# The coordination service (on process 0) lists the lost tasks' ids on the
# line after this one, or on the same line.
_UNHEALTHY = re.compile(r"tasks are unhealthy \(stopped sending heartbeats\):\s*([\d,\s]*)$")


# Gloo's threads print these, sometimes into each other's lines.
_GLOO = re.compile(r"\[Gloo\]|connected peer ranks")


# The worker's start line, printed once it has joined the job.
_START = re.compile(r"jaxgen: process \d+ of \d+, ")


def is_worker() -> bool:
  return os.environ.get(CHILD_ENV) == "1"


def run(argv: list[str], process_id: int, workdir: str, *, show_all: bool,
        join_failure: str) -> int:
  """Runs `argv` as the worker; returns the exit status this process should have.

  `join_failure` is the line for a worker that aborts before it has joined
  the job (the runtime aborts when the coordinator cannot be reached).
  """
  env = dict(os.environ, **{CHILD_ENV: "1", "PYTHONUNBUFFERED": "1"})
  child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           preexec_fn=_worker_preexec)
  previous = {s: signal.signal(s, lambda signum, _: _forward(child, signum))
              for s in (signal.SIGTERM, signal.SIGINT)}
  held: collections.deque[str] = collections.deque(maxlen=_KEPT)
  said = threading.Event()  # the worker printed its own error line
  joined = threading.Event()  # the worker printed its start line
  readers = [threading.Thread(target=_pump, args=(child.stderr, held, said, show_all),
                              daemon=True),
             threading.Thread(target=_pump_stdout,
                              args=(child.stdout, held, joined, show_all, process_id),
                              daemon=True)]
  for reader in readers:
    reader.start()
  try:
    status = _wait(child)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  for reader in readers:
    reader.join(timeout=10)
  if status == 0 or said.is_set():
    return status
  text = list(held)
  if any(_LOST.search(line) for line in text) and not joined.is_set():
    _say(join_failure)
    return 1
  if any(_LOST.search(line) for line in text):
    lost = _lost_process(text, process_id)
    _say(f"{lost} was lost (it exited or stopped responding), so process {process_id} "
         "stops too; see that process's own log for why, then run the same launch again: "
         f"every process resumes from the newest complete checkpoint in {workdir}/checkpoints")
    return 1
  if status > 0 and not show_all:  # a crash: what was held explains it
    sys.stderr.writelines(line if line.endswith("\n") else line + "\n" for line in text)
    sys.stderr.flush()
  if status < 0:  # e.g. the kernel's out-of-memory killer
    _say(f"process {process_id}'s worker (pid {child.pid}) was killed by "
         f"{signal.Signals(-status).name}; if the system ran out of memory, lower "
         "train.batch_size or use more devices, then run the same launch again to resume "
         f"from the newest complete checkpoint in {workdir}/checkpoints")
    return 128 - status
  return status


def _pump(stream, held, said, show_all: bool) -> None:
  out = sys.__stderr__  # not sys.stderr: the command line holds other threads' writes
  for raw in iter(stream.readline, b""):
    line = raw.decode("utf-8", "replace")
    if line.startswith("jaxgen: error:"):
      said.set()
    if not line.startswith("jaxgen:"):
      held.append(line)
    if show_all or line.startswith("jaxgen:"):
      out.write(line)
      out.flush()


def _say(message: str) -> None:
  sys.stderr.write(f"jaxgen: error: {message}\n")
  sys.stderr.flush()


def _pump_stdout(stream, held, joined, show_all: bool, process_id: int) -> None:
  out = sys.__stdout__
  for raw in iter(stream.readline, b""):
    line = raw.decode("utf-8", "replace")
    if _START.match(line):
      joined.set()
    # The collectives' connection log is held. Its C++ writes can be split by
    # another thread's, leaving a bare tail such as "1" on a line of its own; a
    # process other than 0 writes only "jaxgen:" lines, so anything else it prints
    # is held too.
    quiet = _GLOO.search(line) or (process_id != 0 and not line.startswith("jaxgen:"))
    if quiet and not show_all:
      held.append(line)
    else:
      out.write(line)
      out.flush()


def _lost_process(lines: list[str], me: int) -> str:
  for i, line in enumerate(lines):
    m = _UNHEALTHY.search(line.rstrip("\n"))
    if m:
      ids = m.group(1).strip() or (lines[i + 1].strip() if i + 1 < len(lines) else "")
      ids = [x for x in re.split(r"[,\s]+", ids) if x.isdigit()]
      if ids:
        return ("process " if len(ids) == 1 else "processes ") + ", ".join(ids)
  if me != 0 and any("leader task" in line or "Socket closed" in line for line in lines):
    return "process 0 (the coordinator)"
  return "another process of the job"


def _wait(child: subprocess.Popen) -> int:
  while True:
    try:
      return child.wait()
    except KeyboardInterrupt:  # only if a handler was not installed in time
      _forward(child, signal.SIGINT)


def _forward(child: subprocess.Popen, signum: int) -> None:
  if child.poll() is None:
    child.send_signal(signum)


def _worker_preexec() -> None:
  os.setpgid(0, 0)
  if sys.platform.startswith("linux"):
    try:
      libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
      libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the supervisor
    except OSError:
      pass
