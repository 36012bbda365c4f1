"""`jaxgen --help`, `jaxgen COMMAND --help`, `jaxgen --helpfull` and `jaxgen --version`.

Answered before absl parses anything (absl's own --help prints a pointer and
exits 1), from the table of commands (jaxgen/cli/): each command's required flags,
its own flags, and what a shared flag means for it.
"""

from __future__ import annotations

import re
import sys
import textwrap

from absl import flags

from jaxgen.cli.command import Command

_VALUE = {"config": "FILE", "workdir": "DIR", "out": "DIR", "hf": "DIR", "prompt_file": "FILE",
          "source_file": "FILE", "output_file": "FILE"}
_KIND = {"int": "N", "float": "X", "string": "TEXT", "multi_string": "TEXT"}
_HELP = ("--help", "-h", "--helpshort")
_WIDTH = 100


def answer(argv: list[str], commands: dict[str, Command], module=None) -> None:
  """Prints the help or version `argv` asks for and exits 0; returns if it asks neither.

  `commands` is the table (jaxgen.cli.COMMANDS); `module` is not read: the table
  names each command's flags (kept for callers from before it).
  """
  args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if "--version" in args:
    _exit(f"jaxgen {version()}")
  words = [a for a in args if not a.startswith("-")]
  if words[:1] == ["help"]:
    words, args = words[1:], [*args, "--help"]
  if "--helpfull" in args:
    text = [usage(commands)]
    text += [command_help(c, commands) for c in commands]
    text.append("absl's logging flags (--verbosity=1 also shows the libraries' log lines):\n"
                + flags.FLAGS.module_help("absl.logging"))
    _exit("\n\n".join(text))
  if not any(a in _HELP for a in args):
    return
  if not words:
    _exit(usage(commands))
  command = command_named(words, commands)
  if command in commands:
    _exit(command_help(command, commands))
  group = [c for c in commands if c.split()[0] == command]
  if group:
    _exit("\n\n".join(command_help(c, commands) for c in group))
  print(f"jaxgen: error: {command!r} is not a command; use one of {', '.join(commands)} "
        "(jaxgen --help lists them)", file=sys.stderr, flush=True)
  sys.exit(2)


def command_named(words: list[str], commands) -> str:
  """The command the first one or two of the non-flag `words` name (`data prepare`, or
  `train`); a later word is a flag's value (`--workdir DIR`)."""
  two = " ".join(words[:2])
  return two if two in commands else " ".join(words[:1])


def version() -> str:
  from importlib import metadata
  try:
    return metadata.version("jaxgen")
  except metadata.PackageNotFoundError:
    return "(not installed: pip install -e . gives the version)"


def usage(commands: dict[str, Command]) -> str:
  width = max(map(len, commands)) + 2
  lines = ["usage: jaxgen COMMAND [flags]", "",
           "Train and sample text-generation models in JAX/Flax.", "", "commands:"]
  lines = [_wrap(line, "") for line in lines]
  lines += [textwrap.fill(f"{c:<{width}}{commands[c].about}", _WIDTH, initial_indent="  ",
                          subsequent_indent=" " * (width + 2)) for c in commands]
  lines += ["", "jaxgen COMMAND --help shows a command's flags; jaxgen config --config=FILE "
            "lists a recipe's keys (each overridable as --config.KEY=VALUE); --helpfull shows "
            "every flag; --version the version.",
            "e.g. jaxgen train --config=configs/shakespeare_char_cpu.py --workdir=runs/sc"]
  return "\n".join(lines[:-3] + [_wrap(line, "") for line in lines[-3:]])


def own_flags(command: str, commands: dict[str, Command]) -> list:
  """The flags `command` takes besides its required ones."""
  return [flags.FLAGS[name] for name in commands[command].flags]


def stray_flags(command: str, commands: dict[str, Command]) -> list[str]:
  """The flags given on the command line (of the commands') that `command` does not take,
  and would ignore."""
  from jaxgen import cli
  taken = {*commands[command].required, *commands[command].flags}
  return [f.name for m in cli.MODULES for f in flags.FLAGS.get_flags_for_module(m)
          if f.present and f.name.split(".")[0] not in taken]


def command_help(command: str, commands: dict[str, Command]) -> str:
  entry = commands[command]
  required, own = entry.required, own_flags(command, commands)
  line = " ".join([f"jaxgen {command}"] + [f"--{n}={_value(flags.FLAGS[n])}" for n in required])
  lines = [f"usage: {line}" + (" [flags]" if own or "config" in required else ""), "",
           _wrap(_sentence(entry.about), "")]
  if required:
    lines += ["", "required:"]
    for name in required:
      lines += _flag_lines(flags.FLAGS[name], _help(entry, name), default=False)
  if own or "config" in required:
    lines += ["", "flags:"]
  if "config" in required:
    lines += _flag_lines(None, "override a key of the config, e.g. --config.train.steps=100; "
                         "jaxgen config --config=FILE lists them all", name="--config.KEY=VALUE")
  for flag in own:
    lines += _flag_lines(flag, _help(entry, flag.name))
  return "\n".join(lines)


def _help(entry: Command, name: str) -> str:
  """What flag `name` does for the command: its own words there, else the flag's help less
  what absl adds (an enum's choices, a repeated flag's note)."""
  if name in entry.helps:
    return entry.helps[name]
  text = re.sub(r";\s*repeat this option to specify a list of values$", "", flags.FLAGS[name].help)
  return re.sub(r"^<[^>]*>: ", "", text)


def _sentence(text: str) -> str:
  return text[:1].upper() + text[1:] + "." if text else ""


def _flag_lines(flag, text: str, name: str | None = None, default: bool = True) -> list[str]:
  if name is None:
    if flag.boolean:
      name = f"--[no]{flag.name}"
    else:
      name = f"--{flag.name}={_value(flag)}"
    if isinstance(flag, flags.MultiFlag):
      text += " (repeatable)"
    elif default and flag.default is not None and flag.default != []:
      shown = str(flag.default).lower() if flag.boolean else repr(flag.default)
      text += f" (default: {shown})"
  return [f"  {name}", _wrap(text[:1].upper() + text[1:], "      ")]


def _value(flag) -> str:
  """What a flag's value is, for the usage lines: DIR, FILE, N, X, TEXT or the choices."""
  if flag.name in _VALUE:
    return _VALUE[flag.name]
  choices = getattr(flag.parser, "enum_values", None)
  return "|".join(choices) if choices else _KIND.get(flag.parser.flag_type(), "VALUE")


def _wrap(text: str, indent: str) -> str:
  return textwrap.fill(text, _WIDTH, initial_indent=indent, subsequent_indent=indent,
                       break_on_hyphens=False) if text else indent.rstrip()


def _exit(text: str) -> None:
  print(text, flush=True)
  sys.exit(0)
