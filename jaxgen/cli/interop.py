"""`jaxgen export` and `jaxgen import`: Hugging Face model directories (jaxgen/interop/)."""

from __future__ import annotations

from absl import flags

from jaxgen import workdir_paths
from jaxgen.cli import common
from jaxgen.cli.command import Command

_FORMAT = flags.DEFINE_enum("format", "hf", ["hf"], "the output format (Hugging Face "
                            "transformers: config.json + safetensors).")
_MAX_SHARD = flags.DEFINE_string("max_shard_size", "5GB", "safetensors shard size limit, "
                                 "e.g. 5GB or 500MB (HF's default is 5GB).")
_HF = flags.DEFINE_string("hf", None, "a local Hugging Face model directory (config.json, "
                          "safetensors, tokenizer.json).")


def export() -> None:
  common.check_checkpoint_choice()
  from jaxgen.interop import safetensors_io  # numpy only
  safetensors_io.parse_size(_MAX_SHARD.value)  # a bad flag is named first, as before
  workdir = common.WORKDIR.value
  workdir_paths.checkpoints_of(workdir)
  from jaxgen.interop.hf_export import export as export_hf
  out = export_hf(workdir, common.OUT.value, step=common.STEP.value, best=common.BEST.value,
                  max_shard_size=_MAX_SHARD.value)
  print(f"jaxgen: exported {workdir} to {out} (Hugging Face format)", flush=True)


def import_() -> None:
  workdir_paths.hf_model_dir(_HF.value)
  from jaxgen.interop.hf_import import import_hf
  wd = import_hf(_HF.value, common.WORKDIR.value)
  print(f"jaxgen: imported {_HF.value} into {wd}; sample with `jaxgen sample "
        f"--workdir={wd}`, fine-tune with `jaxgen train --config={wd / 'config.py'} "
        f"--workdir={wd}`", flush=True)


COMMANDS = {
    "export": Command(
        "write a workdir's checkpoint as a Hugging Face model directory (--out)",
        ("workdir", "out"), ("format", "max_shard_size", "step", "best"), export,
        helps={"out": "the directory to write (new or empty)."}),
    "import": Command(
        "turn a local Hugging Face GPT-2 or Llama directory (--hf) into a workdir",
        ("hf", "workdir"), (), import_),
}
