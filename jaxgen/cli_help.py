"""`jaxgen --help`, `jaxgen COMMAND --help`, `jaxgen --helpfull` and `jaxgen --version`.

Answered before absl parses anything (absl's own --help prints a pointer and
exits 1). A command's flags are the ones whose help text starts with the
command's name ("sample: ...", "plan: ..."), after the flags it requires.
"""

from __future__ import annotations

import re
import sys
import textwrap

from absl import flags

ABOUT = {
    "train": "train a recipe's model in --workdir, or resume the run already there",
    "sample": "generate text from a workdir's checkpoint: --prompt (language models) or "
              "--source (encoder-decoders)",
    "plan": "dry run: parameters, memory per device and step time of a config, nothing trained",
    "data prepare": "prepare the config's data source (TFDS data sets) and print its sizes; "
                    "with --out=DIR, tokenize it once into a token store",
    "data inspect": "print the first training batches decoded: what the model is fed",
    "tokenizer train": "train a SentencePiece tokenizer on the config's training data",
    "export": "write a workdir's checkpoint as a Hugging Face model directory (--out)",
    "import": "turn a local Hugging Face GPT-2 or Llama directory (--hf) into a workdir",
    "config": "print the config's every key with its resolved value and its doc",
}
_VALUE = {"config": "FILE", "workdir": "DIR", "out": "DIR", "hf": "DIR", "prompt_file": "FILE",
          "source_file": "FILE", "output_file": "FILE"}
_KIND = {"int": "N", "float": "X", "string": "TEXT", "multi_string": "TEXT"}
_HELP = ("--help", "-h", "--helpshort")
# Flags a command reads whose help is labelled with another command's name.
_ALSO = {"export": ("step", "best"), "data prepare": ("out", "json", "vocab_size")}
_WIDTH = 100


def answer(argv: list[str], commands: dict[str, tuple[str, ...]], module) -> None:
  """Prints the help or version `argv` asks for and exits 0; returns if it asks neither.

  `module` is the one defining the command flags (jaxgen.main).
  """
  args = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if "--version" in args:
    _exit(f"jaxgen {version()}")
  words = [a for a in args if not a.startswith("-")]
  if words[:1] == ["help"]:
    words, args = words[1:], [*args, "--help"]
  if "--helpfull" in args:
    text = [usage(commands)]
    text += [command_help(c, commands, module) for c in commands]
    text.append("absl's logging flags (--verbosity=1 also shows the libraries' log lines):\n"
                + flags.FLAGS.module_help("absl.logging"))
    _exit("\n\n".join(text))
  if not any(a in _HELP for a in args):
    return
  if not words:
    _exit(usage(commands))
  command = command_named(words, commands)
  if command in commands:
    _exit(command_help(command, commands, module))
  group = [c for c in commands if c.split()[0] == command]
  if group:
    _exit("\n\n".join(command_help(c, commands, module) for c in group))
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


def usage(commands: dict[str, tuple[str, ...]]) -> str:
  width = max(map(len, commands)) + 2
  lines = ["usage: jaxgen COMMAND [flags]", "",
           "Train and sample text-generation models in JAX/Flax.", "", "commands:"]
  lines = [_wrap(line, "") for line in lines]
  lines += [textwrap.fill(f"{c:<{width}}{ABOUT.get(c, '')}", _WIDTH, initial_indent="  ",
                          subsequent_indent=" " * (width + 2)) for c in commands]
  lines += ["", "jaxgen COMMAND --help shows a command's flags; jaxgen config --config=FILE "
            "lists a recipe's keys (each overridable as --config.KEY=VALUE); --helpfull shows "
            "every flag; --version the version.",
            "e.g. jaxgen train --config=configs/shakespeare_char_cpu.py --workdir=runs/sc"]
  return "\n".join(lines[:-3] + [_wrap(line, "") for line in lines[-3:]])


def own_flags(command: str, commands: dict[str, tuple[str, ...]], module) -> list:
  """The flags `command` takes besides its required ones (`commands[command]`): those
  whose help is labelled with its name, and those in _ALSO."""
  required, also = commands[command], _ALSO.get(command, ())
  return [f for f in flags.FLAGS.get_flags_for_module(module) if f.name not in required and (
      f.name in also or _part(f.help, command, commands) is not None)]


def stray_flags(command: str, commands: dict[str, tuple[str, ...]], module) -> list[str]:
  """The flags given on the command line (of `module`'s) that `command` does not take,
  and would ignore."""
  taken = {*commands[command], *(f.name for f in own_flags(command, commands, module))}
  return [f.name for f in flags.FLAGS.get_flags_for_module(module)
          if f.present and f.name.split(".")[0] not in taken]


def command_help(command: str, commands: dict[str, tuple[str, ...]], module) -> str:
  required = commands[command]
  own = own_flags(command, commands, module)
  line = " ".join([f"jaxgen {command}"] + [f"--{n}={_value(flags.FLAGS[n])}" for n in required])
  lines = [f"usage: {line}" + (" [flags]" if own or "config" in required else ""), "",
           _wrap(_sentence(ABOUT.get(command, "")), "")]
  if required:
    lines += ["", "required:"]
    for name in required:
      flag = flags.FLAGS[name]
      lines += _flag_lines(flag, _part(flag.help, command, commands) or flag.help, default=False)
  if own or "config" in required:
    lines += ["", "flags:"]
  if "config" in required:
    lines += _flag_lines(None, "override a key of the config, e.g. --config.train.steps=100; "
                         "jaxgen config --config=FILE lists them all", name="--config.KEY=VALUE")
  for flag in own:
    lines += _flag_lines(flag, _part(flag.help, command, commands) or _own_help(flag))
  return "\n".join(lines)


def _part(text: str, command: str, commands) -> str | None:
  """The part of a flag's help labelled `command: ...`, or None if it has none.

  A flag that serves several commands labels each part: "tokenizer train: ...
  plan: ..." (a label starts the text or follows a sentence's end).
  """
  names = "|".join(re.escape(c) for c in sorted(commands, key=len, reverse=True))
  text = re.sub(r"^<[^>]*>: ", "", text or "")  # absl prefixes an enum's choices
  text = re.sub(r";\s*repeat this option to specify a list of values$", "", text)
  parts = re.split(rf"(?:^|(?<=\.) )({names}): ", text)
  labelled = dict(zip(parts[1::2], parts[2::2]))
  return labelled[command].strip() if command in labelled else None


def _own_help(flag) -> str:
  """A flag's help less its command labels and what absl adds (enum choices, repeats)."""
  text = re.sub(r";\s*repeat this option to specify a list of values$", "", flag.help)
  text = re.sub(r"^<[^>]*>: ", "", text)
  return re.sub(r"^[a-z ]+: ", "", text)


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
