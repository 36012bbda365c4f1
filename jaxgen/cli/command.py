"""What the table (cli/__init__.py) holds for each command."""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Command:
  about: str  # its line in `jaxgen --help`
  required: tuple[str, ...]  # flags it cannot run without; "config" if it reads a recipe
  flags: tuple[str, ...]  # the flags it takes besides those; any other given is refused
  run: Callable[[], None]  # the work, after the checks; imports JAX and the rest inside
  # Before --config is checked: flag checks that must come first (exit 2), or `jaxgen
  # config`'s printing, which shows the config the checks then refuse.
  first: Callable[[], None] | None = None
  # What a shared flag (cli/common.py) does for this command, where its own help is general.
  helps: Mapping[str, str] = dataclasses.field(default_factory=dict)
