"""Turns SIGTERM/SIGINT into a request to stop after the current step.

A scheduler's SIGTERM (preemption) or a Ctrl-C sets a flag; the train loop
asks `should_stop(step)` once per step, saves a checkpoint at the step it
reached and exits cleanly. A second signal while saving is left to the
default handler, so a stuck save can still be interrupted.

With several processes, a signal usually reaches only some of them, yet all
must stop at the same step to save one checkpoint together. JAX's runtime
catches SIGTERM itself and tells every process through the coordinator;
`reached_preemption_sync_point(step)` then turns true on all of them at the
same step. A Ctrl-C is passed on to it as a SIGTERM to this process.
"""

from __future__ import annotations

import os
import signal
import threading


class StopRequest:
  """Installed for the duration of a `with` block (main thread only)."""

  def __init__(self, multi_process: bool = False):
    self.signal_name: str | None = None
    self._multi = multi_process
    self._previous = {}

  def __bool__(self) -> bool:
    return self.signal_name is not None

  def should_stop(self, step: int) -> bool:
    """Whether to save `step` and stop; called once per step with increasing
    steps, by every process in the same order. After the last step the train
    loop goes on counting (t.steps + 1, ...) for its end-of-run stop checks."""
    if self._multi and self.signal_name is None:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self._local_signal or "SIGTERM"
    return bool(self)

  def __enter__(self) -> "StopRequest":
    self._local_signal = None
    if threading.current_thread() is threading.main_thread():
      # JAX's own SIGTERM handler must stay in place with several processes.
      signals = (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT)
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
    if self._multi:
      self._local_signal = name
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's handler, which tells the others
    else:
      self.signal_name = name
