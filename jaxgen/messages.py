"""How jaxgen's lines to people count things, and its warnings and hints.

`count(1, "document")` is "1 document", `count(22920, "character")` is
"22,920 characters". `warn` and `hint` print one line on stderr,
`jaxgen: warning: ...` / `jaxgen: hint: ...`, from process 0 only (every process
of a multi-process job reads the same data and would say the same), and each
distinct line once per process: the data is read more than once in a command.
"""

from __future__ import annotations

import sys

_said: set[str] = set()  # the lines already printed by this process


def count(n: int, noun: str, plural: str | None = None) -> str:
  """n and the noun, singular for exactly one: '1 document', '2 documents'."""
  return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def warn(message: str) -> None:
  """Prints `jaxgen: warning: message` on stderr (process 0, once)."""
  _say(f"jaxgen: warning: {message}")


def hint(message: str) -> None:
  """Prints `jaxgen: hint: message` on stderr (process 0, once)."""
  _say(f"jaxgen: hint: {message}")


def _say(line: str) -> None:
  if line in _said or not _is_process_0():
    return
  _said.add(line)
  print(line, file=sys.stderr, flush=True)


def _is_process_0() -> bool:
  # Never imports jax nor starts a backend: a job of several processes has joined
  # jax.distributed before it reads any data.
  jax = sys.modules.get("jax")
  return jax is None or not jax.distributed.is_initialized() or jax.process_index() == 0
