"""Parsing the command line: a bad flag or --config file is one line, exit status 2."""

from __future__ import annotations

from absl import flags

from jaxgen import cli, cli_help
from jaxgen.cli import common


def parse_flags(argv: list[str]) -> list[str]:
  cli_help.answer(argv, cli.COMMANDS)  # --help, CMD --help, --version
  try:
    rest = flags.FLAGS(argv)
    if common.CONFIG.value is not None:
      # config_flags defers a config file's load error until first use.
      common.CONFIG.value.get  # pylint: disable=pointless-statement
  except Exception as e:  # config_flags raises several types for one cause: a bad flag
    common.fail(flag_error(e, argv), status=2)
  return rest


def flag_error(e: BaseException, argv: list[str]) -> str:
  """One line for a bad flag, reworded where config_flags' own text is unclear."""
  load_error = e
  while load_error is not None and not isinstance(load_error, OSError):
    load_error = load_error.__cause__ or load_error.__context__
  if load_error is not None:  # the --config file failed to load
    # Its last line is the OS's reason: "[Errno 2] No such file or directory: 'x.py'".
    reason = str(load_error.__cause__ or load_error).strip().splitlines()[-1].strip()
    return (f"--config file could not be loaded: {reason}; pass a recipe from configs/, "
            "e.g. --config=configs/shakespeare_char_cpu.py")
  if isinstance(e, flags.UnrecognizedFlagError) and e.flagname.startswith("config."):
    name = cli_help.command_named([a for a in argv[1:] if not a.startswith("-")], cli.COMMANDS)
    if name in cli.COMMANDS and "config" not in cli.COMMANDS[name].required:
      return (f"--{e.flagname} overrides a config key, but `jaxgen {name}` takes no "
              "--config; drop it")
    return (f"--{e.flagname} overrides a key of --config, which is not given; pass "
            "--config=FILE first, e.g. --config=configs/shakespeare_char_cpu.py")
  # An unknown key is a KeyError (or an AttributeError raised while handling
  # one) whose text is "'key'\nDid you mean ...?".
  key_error = e if isinstance(e, KeyError) else e.__context__
  if isinstance(key_error, KeyError) and key_error.args:
    key, _, hint = str(key_error.args[0]).partition("\n")
    key = key.strip("'\"")
    names = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    flag = next((n for n in names if key in n.split(".")[1:]), "--config")
    hint = f"; {hint[:1].lower()}{hint[1:]}" if hint else ""
    return f"{flag}: the config has no key {key!r}{hint}"
  return common.one_line(e)
