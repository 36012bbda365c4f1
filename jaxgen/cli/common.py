"""The flags several commands share, and what every command does on failure.

A shared flag has one meaning; each command's entry in the table (cli/__init__.py) may
say in its own words what it does with it (`helps`).
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from jaxgen import json_config
from jaxgen.errors import UserError

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Recipe file from configs/ (or a workdir's config.json, its run's resolved "
    "config); override keys as --config.train.steps=100.", lock_config=True)
# --config also reads a workdir's config.json: `jaxgen train|plan --config=runs/a/config.json`.
flags.FLAGS["config"].parser = json_config.RecipeOrJsonParser(flags.FLAGS["config"].parser)
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, TensorBoard files, "
                              "samples and checkpoints.")
OUT = flags.DEFINE_string("out", None, "the directory to write.")
JSON = flags.DEFINE_bool("json", False, "print one JSON object instead of text.")
STEP = flags.DEFINE_integer("step", None, "restore the checkpoint of this step.")
BEST = flags.DEFINE_bool("best", False, "restore the checkpoint with the lowest validation "
                         "loss.")
# One meaning wherever it is taken: the size of the tokenizer's vocabulary (the pieces a
# SentencePiece model is trained to, or the size a plan assumes).
VOCAB_SIZE = flags.DEFINE_integer("vocab_size", None, "the tokenizer's vocabulary size.")

# A required flag's line when it is missing.
MISSING = {
    "config": "--config is required, e.g. --config=configs/shakespeare_char_cpu.py",
    "workdir": "--workdir is required: the directory for metrics, TensorBoard files and "
               "checkpoints",
    "vocab_size": "--vocab_size is required: the number of SentencePiece pieces, e.g. 1024",
    "out": "--out is required: the directory to export into, e.g. --out=runs/sc/hf",
    "hf": "--hf is required: a local Hugging Face model directory",
}
EXAMPLE = "e.g. jaxgen train --config=configs/shakespeare_char_cpu.py --workdir=runs/sc"


def check_checkpoint_choice() -> None:
  """sample and export restore the newest checkpoint, --step's or with --best the best."""
  if STEP.value is not None and BEST.value:
    raise UserError("--step and --best both given; use one")


def setup_jax(cfg) -> None:
  """The persistent compilation cache, for the commands that compile (not plan's dry run)."""
  import jax
  cache_dir = cfg.train.get("compilation_cache_dir", "")
  if cache_dir:
    # A restarted or resumed job reuses compiled programs instead of recompiling.
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return text or type(e).__name__


def fail(message: str, status: int = 1, at_once: bool = False) -> None:
  print(f"jaxgen: error: {one_line(UserError(message))}", file=sys.stderr, flush=True)
  if at_once:
    sys.stdout.flush()
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)
