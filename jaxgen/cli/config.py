"""`jaxgen config`: a recipe's every key with its resolved value and its doc."""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from jaxgen.cli import common
from jaxgen.cli.command import Command


def show() -> None:
  """Printed before the checks: a config they refuse is shown, then their line."""
  from jaxgen import config_docs
  label = config_flags.get_config_filename(flags.FLAGS["config"])
  print(config_docs.format_config(common.CONFIG.value, label,
                                  config_flags.get_override_values(flags.FLAGS["config"]),
                                  recipe=label), flush=True)


COMMANDS = {"config": Command(
    "print the config's every key with its resolved value and its doc",
    ("config",), (), run=lambda: None, first=show)}
