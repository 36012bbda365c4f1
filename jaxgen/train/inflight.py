"""Dispatching device work with a bound on what is in flight.

On host CPU devices, sharded programs containing collectives that are queued
back to back without the host ever waiting abort after 40 s ("Termination
timeout for all reduce"), and with several processes they hang. Every loop
that dispatches device work therefore keeps at most `depth` results unfetched:
the device still never waits for the host, and the queue stays short.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax

# Dispatch result n, then fetch result n-1: the training loop's own rhythm.
DEFAULT_DEPTH = 2


def fetched(fn: Callable[[Any], Any], items: Iterable[Any],
            depth: int = DEFAULT_DEPTH) -> Iterator[Any]:
  """Yields `jax.device_get(fn(item))` for each item, in order, with at most
  `depth` calls dispatched but not yet fetched."""
  if depth < 1:
    raise ValueError(f"depth must be at least 1, got {depth}")
  queue: collections.deque = collections.deque()
  for item in items:
    queue.append(fn(item))
    if len(queue) >= depth:
      yield jax.device_get(queue.popleft())
  while queue:
    yield jax.device_get(queue.popleft())
