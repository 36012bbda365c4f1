"""Library log lines held back from a successful command's output.

absl routes Python logging (Orbax, TFDS, urllib3, JAX) to stderr through one
handler on the root logger. `hold_library_logs` swaps it for a handler that
keeps the most recent records in memory; `show` writes them out through
the original handler, which the command line does when a command crashes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import threading

from absl import logging as absl_logging

_KEPT = 200  # the most recent records: enough context for a crash


class HeldLogs(logging.Handler):
  """Keeps the last `_KEPT` records; `show` emits them through `target`."""

  def __init__(self, target: logging.Handler):
    super().__init__()
    self._target = target
    self._records: collections.deque = collections.deque(maxlen=_KEPT)

  def emit(self, record: logging.LogRecord) -> None:
    self._records.append(record)

  def show(self) -> None:
    while self._records:
      self._target.handle(self._records.popleft())


def hold_library_logs() -> HeldLogs:
  """Replaces absl's stderr handler on the root logger with a HeldLogs, and
  holds late asyncio callback errors there too."""
  root = logging.getLogger()
  target = absl_logging.get_absl_handler()
  held = HeldLogs(target)
  if target in root.handlers:
    root.removeHandler(target)
  root.addHandler(held)
  if not isinstance(sys.stderr, _MainThreadStderr):
    sys.stderr = _MainThreadStderr(sys.stderr)
  return held


class _MainThreadStderr:
  """sys.stderr for the main thread; other threads' lines become held log records.

  jaxgen writes only from the main thread. A library thread writing to stderr
  is noise of the kind above (TensorStore prints its callbacks' tracebacks
  straight to sys.stderr, bypassing logging and sys.excepthook).
  """

  def __init__(self, stream):
    self._stream = stream
    self._partial: dict[int, str] = {}
    self._logger = logging.getLogger("jaxgen.library")

  def write(self, text: str) -> int:
    if threading.current_thread() is threading.main_thread():
      return self._stream.write(text)
    ident = threading.get_ident()
    *lines, rest = (self._partial.pop(ident, "") + text).split("\n")
    for line in lines:
      self._logger.warning("%s", line)
    if rest:
      self._partial[ident] = rest
    return len(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_libraries():
  """Within it, records of absl's logger (Orbax and TFDS log through it) are held,
  and shown if it raises: the Python API (`jaxgen.sample.generate` in a notebook)
  is as quiet as the command line. Under the command line (flags parsed), which
  holds or shows them itself by --verbosity, it changes nothing.
  """
  from absl import flags
  if flags.FLAGS.is_parsed():
    yield
    return
  logger = logging.getLogger("absl")
  held = HeldLogs(_ToRoot())
  propagate = logger.propagate
  logger.addHandler(held)
  logger.propagate = False
  try:
    yield
  except BaseException:
    held.show()
    raise
  finally:
    logger.removeHandler(held)
    logger.propagate = propagate


class _ToRoot(logging.Handler):
  """Hands a record to the root logger's handlers, where it would have gone."""

  def emit(self, record: logging.LogRecord) -> None:
    logging.getLogger().handle(record)
