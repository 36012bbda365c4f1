"""Turns SIGTERM/SIGINT into a request to stop after the current step.

A scheduler's SIGTERM (preemption) or a Ctrl-C sets a flag; the train loop
checks it between steps, saves a checkpoint at the step it reached and exits
cleanly. A second signal while saving is left to the default handler, so a
stuck save can still be interrupted.
"""

from __future__ import annotations

import signal
import threading


class StopRequest:
  """Installed for the duration of a `with` block (main thread only)."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  def __bool__(self) -> bool:
    return self.signal_name is not None

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    self.signal_name = signal.Signals(signum).name
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
