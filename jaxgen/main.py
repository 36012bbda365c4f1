"""The `jaxgen` command: `jaxgen train --config=configs/X.py --workdir=DIR`.

Parses the flags, looks the command up in the table (jaxgen/cli/) and runs it. Errors
the user can fix end with one line on stderr and exit status 2 (bad flags) or 1
(anything else), never a traceback.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from jaxgen import cli, cli_help, config_check, logs
from jaxgen.cli import common, parse
from jaxgen.errors import UserError

COMMANDS = cli.COMMANDS  # the table, also read where the command line was read from here
_parse_flags = parse.parse_flags


def main(argv: list[str]) -> None:
  held = None
  if not flags.FLAGS["verbosity"].present:
    # Libraries log routine warnings (Orbax on every read-only open, urllib3 on
    # every retry): a successful command prints only its own output. They are
    # shown if the command crashes, and all of them with --verbosity.
    logging.set_verbosity(logging.WARNING)
    held = logs.hold_library_logs()
  try:
    _run_command(argv)
  except BrokenPipeError:  # `jaxgen config ... | head` stopped reading: not an error of ours
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
    sys.exit(1)
  except Exception:
    if held is not None:
      held.show()  # a crash shows what the libraries said before it
    raise


def _run_command(argv: list[str]) -> None:
  name = " ".join(argv[1:])  # what absl left: the command's words
  command = COMMANDS.get(name)
  if command is None:
    common.fail(f"expected a command, one of: {', '.join(COMMANDS)} (got {name or 'none'}); "
                f"{common.EXAMPLE}; jaxgen --help describes each", status=2)
  stray = cli_help.stray_flags(name, COMMANDS)
  if stray:  # every command's flags are absl's, defined at once: another's would be ignored
    common.fail(f"--{stray[0]} is not a flag of `jaxgen {name}`, which would ignore it; drop "
                f"it (jaxgen {name} --help lists the flags it takes)", status=2)
  for flag in command.required:
    if getattr(flags.FLAGS, flag) in (None, ""):
      common.fail(common.MISSING[flag], status=2)
  try:
    if command.first is not None:
      command.first()
    if "config" in command.required:
      config_check.check(common.CONFIG.value)  # every key, before anything runs
    command.run()
  except UserError as e:
    common.fail(str(e))
  except KeyboardInterrupt:
    # Also a second Ctrl-C while a checkpoint is being written: exit at once,
    # before interpreter shutdown cuts off the library threads mid-write (each
    # would print a traceback). An unfinished save is never used on resume.
    common.fail("interrupted; an unfinished checkpoint is not used: the same command resumes "
                "from the newest complete one", status=130, at_once=True)


def run() -> None:
  """Console-script entry point."""
  from jaxgen import host
  host.restart_with_malloc_tunables()
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
