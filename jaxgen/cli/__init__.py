"""The command line as one table: command name -> Command (cli/command.py), the flags it
requires, the flags it takes and its function.

One module per command group defines its flags and its functions and adds its commands
here. Every command's flags are absl flags defined at import, so a flag another command
takes is refused by name (cli_help.stray_flags) rather than ignored; the modules import
JAX and the rest only when a command runs, so flags, configs and directories are checked
in a second rather than after the imports.
"""

from __future__ import annotations

from jaxgen.cli import common, config, data, interop, plan, sample, tokenizer, train
from jaxgen.cli.command import Command

# In `jaxgen --help`'s order.
COMMANDS: dict[str, Command] = {
    **train.COMMANDS, **sample.COMMANDS, **plan.COMMANDS, **data.COMMANDS,
    **tokenizer.COMMANDS, **interop.COMMANDS, **config.COMMANDS}
# The modules that define the commands' flags.
MODULES = (common, config, data, interop, plan, sample, tokenizer, train)
