"""`jaxgen plan`: a dry run of a config, nothing trained."""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from jaxgen.cli import common
from jaxgen.cli.command import Command
from jaxgen.errors import UserError

_DEVICES = flags.DEFINE_integer("devices", None, "plan for this many devices, compiling for "
                                "as many host CPU devices (default: the devices JAX finds).")
_CHIP = flags.DEFINE_string("chip", None, "the accelerator to check the fit and step time "
                            "against, e.g. h100, h200, tpu_v5e (default: this machine's).")
_MFU = flags.DEFINE_float("mfu", 0.4, "the model FLOPs utilisation the step time estimate "
                          "assumes.")


def check() -> None:
  """Flag checks, first: --devices takes effect only before JAX starts."""
  from jaxgen import chips
  if _DEVICES.value is not None:
    if _DEVICES.value < 1:
      common.fail(f"--devices={_DEVICES.value} must be at least 1", status=2)
    # Fake devices: N host CPU devices stand in for the accelerators.
    xla_flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(
        xla_flags + [f"--xla_force_host_platform_device_count={_DEVICES.value}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
  if _CHIP.value is not None and _CHIP.value not in chips.BY_NAME:
    common.fail(f"--chip={_CHIP.value} is not a chip jaxgen knows; use one of "
                f"{', '.join(chips.BY_NAME)}", status=2)
  if not 0 < _MFU.value <= 1:
    common.fail(f"--mfu={_MFU.value} must be in (0, 1], e.g. 0.4", status=2)


def run() -> None:
  import jax
  from jaxgen import chips
  from jaxgen.train import plan
  devices = jax.devices()
  chip = chips.BY_NAME[_CHIP.value] if _CHIP.value else chips.chip_of(devices[0])
  report = plan.plan(common.CONFIG.value, devices, chip=chip, mfu=_MFU.value,
                     vocab_size=common.VOCAB_SIZE.value)
  label = config_flags.get_config_filename(flags.FLAGS["config"])
  if common.JSON.value:
    print(json.dumps({"config": label, **report}), flush=True)
  else:
    print(plan.format_text(report, label), flush=True)
  for kind in ("warning", "error"):
    for line in report[f"{kind}s"]:
      print(f"jaxgen: {kind}: {common.one_line(UserError(line))}", file=sys.stderr, flush=True)
  if report["errors"]:
    sys.exit(1)


COMMANDS = {"plan": Command(
    "dry run: parameters, memory per device and step time of a config, nothing trained",
    ("config",), ("devices", "chip", "mfu", "vocab_size", "json"), run, first=check,
    helps={"vocab_size": "the tokenizer's vocabulary size the plan assumes (default: "
                         "model.vocab_size, else the tokenizer's)."})}
