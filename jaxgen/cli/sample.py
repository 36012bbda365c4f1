"""`jaxgen sample`: generate text from a workdir's checkpoint, from prompts or sources."""

from __future__ import annotations

import os
import pathlib

from absl import flags

from jaxgen import workdir_paths
from jaxgen.cli import common
from jaxgen.cli.command import Command
from jaxgen.errors import UserError

_PROMPT = flags.DEFINE_string("prompt", "", "text to continue ('' = unconditional).")
_PROMPT_FILE = flags.DEFINE_string("prompt_file", None, "a file of prompts, one per line, "
                                   "generated in batches (instead of --prompt).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 500, "tokens to generate per sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "softmax temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens; 0 = off.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass in (0, 1]; 1 = off.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "samples per prompt (one batch).")
_SEED = flags.DEFINE_integer("seed", 0, "random seed.")
_BEAM = flags.DEFINE_integer("beam_size", 0, "beam search with this many beams (0 = sample); "
                             "--num_samples best beams are printed.")
_LENGTH_PENALTY = flags.DEFINE_float("length_penalty", 1.0, "beam length normalisation "
                                     "exponent alpha (0 = raw log-probability).")
_REPETITION_PENALTY = flags.DEFINE_float(
    "repetition_penalty", 1.0, "divide the logits of tokens already in the text by this "
    "(multiply where negative; Hugging Face's formula); 1 = off.")
_WINDOW_STRIDE = flags.DEFINE_integer(
    "window_stride", 1, "past the model's context, re-read the last context-N+1 tokens every "
    "N new tokens; 1 predicts every token from the whole context (exact, nanoGPT's crop), "
    "larger is faster.")
_STOP = flags.DEFINE_multi_string("stop", [], "end each text before the first occurrence of "
                                  "this string (repeat the flag for several).")
_TRUNCATE_SOURCE = flags.DEFINE_bool("truncate_source", False, "cut sources longer than the "
                                     "model reads (as training does) instead of refusing "
                                     "them; a line says how many were cut.")
# Conditional models (encoder-decoders): generate from sources instead of prompts.
_SOURCE = flags.DEFINE_string("source", None, "the source text to generate from.")
_SOURCE_FILE = flags.DEFINE_string("source_file", None, "a file of sources, one per line, "
                                   "generated in batches.")
_OUTPUT_FILE = flags.DEFINE_string("output_file", None, "write the outputs here, one per line "
                                   "(prompts or sources in input order, each one's samples in "
                                   "turn; line breaks inside become spaces) instead of "
                                   "printing them.")
_FLAGS = ("prompt", "prompt_file", "max_new_tokens", "temperature", "top_k", "top_p",
         "num_samples", "seed", "beam_size", "length_penalty", "repetition_penalty",
         "window_stride", "stop", "truncate_source", "source", "source_file", "output_file",
         "step", "best")


def run() -> None:
  workdir = common.WORKDIR.value
  workdir_paths.checkpoints_of(workdir)
  from jaxgen.sample.restore import generate, read_prompt_file
  if _SOURCE.value is not None or _SOURCE_FILE.value is not None:
    _sample_sources(generate, read_prompt_file)
    return
  if _TRUNCATE_SOURCE.value:
    raise UserError("--truncate_source cuts the sources of an encoder-decoder; give --source "
                    "or --source_file, or drop it")
  if _PROMPT_FILE.value is not None and _PROMPT.present:
    raise UserError("--prompt and --prompt_file both given; use one")
  common.check_checkpoint_choice()
  _output_file()
  prompts = read_prompt_file(_PROMPT_FILE.value) if _PROMPT_FILE.value is not None else [
      _PROMPT.value]
  texts = generate(workdir, prompts, max_new_tokens=_MAX_NEW.value,
                   temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                   num_samples=_NUM_SAMPLES.value, seed=_SEED.value, beam_size=_BEAM.value,
                   length_penalty=_LENGTH_PENALTY.value,
                   repetition_penalty=_REPETITION_PENALTY.value,
                   window_stride=_WINDOW_STRIDE.value, stop=_STOP.value,
                   step=common.STEP.value, best=common.BEST.value)
  if _OUTPUT_FILE.value is not None:
    _write_lines(texts)
    return
  for p, samples in enumerate(texts):
    for i, text in enumerate(samples):
      where = f"prompt {p + 1}/{len(texts)}, " if len(texts) > 1 else ""
      print(f"--- {where}sample {i + 1}/{len(samples)} ---\n{text}", flush=True)


def _sample_sources(generate, read_lines) -> None:
  """`jaxgen sample --source=... | --source_file=F [--output_file=O]`."""
  if _SOURCE.value is not None and _SOURCE_FILE.value is not None:
    raise UserError("--source and --source_file both given; use one")
  if _PROMPT.present or _PROMPT_FILE.value is not None:
    raise UserError("--prompt and --source both given: an encoder-decoder generates from "
                    "its source; use --source or --source_file alone")
  common.check_checkpoint_choice()
  _output_file()
  sources = (read_lines(_SOURCE_FILE.value, "--source_file") if _SOURCE_FILE.value is not None
             else [_SOURCE.value])
  # Outputs from a source are greedy unless --temperature is given: a translation
  # should not change from one run to the next.
  temperature = _TEMPERATURE.value if _TEMPERATURE.present else 0.0
  texts = generate(common.WORKDIR.value, source=sources, max_new_tokens=_MAX_NEW.value,
                   temperature=temperature, top_k=_TOP_K.value, top_p=_TOP_P.value,
                   num_samples=_NUM_SAMPLES.value, seed=_SEED.value, beam_size=_BEAM.value,
                   length_penalty=_LENGTH_PENALTY.value,
                   repetition_penalty=_REPETITION_PENALTY.value, stop=_STOP.value,
                   step=common.STEP.value, best=common.BEST.value,
                   truncate_source=_TRUNCATE_SOURCE.value)
  if _OUTPUT_FILE.value is None:
    print("\n".join(_one_per_line(texts)), flush=True)
    return
  _write_lines(texts)


def _one_per_line(texts: list[list[str]]) -> list[str]:
  # One line per output: a line break inside one would shift every later line.
  return [t.replace("\r", " ").replace("\n", " ") for samples in texts for t in samples]


def _write_lines(texts: list[list[str]]) -> None:
  """--output_file: every output on its own line, the file whole or not at all."""
  out = _output_file()
  tmp = out.with_name(f".{out.name}.tmp")
  tmp.write_text("".join(line + "\n" for line in _one_per_line(texts)), encoding="utf-8")
  os.replace(tmp, out)  # whole or not at all


def _output_file() -> pathlib.Path | None:
  """--output_file's path, checked before any work is done; None if not given."""
  if _OUTPUT_FILE.value is None:
    return None
  out = pathlib.Path(_OUTPUT_FILE.value).expanduser()
  if out.is_dir() or not out.parent.is_dir():
    raise UserError(f"--output_file={_OUTPUT_FILE.value} cannot be written: "
                    + ("it is a directory" if out.is_dir() else f"{out.parent} does not exist"))
  return out


COMMANDS = {"sample": Command(
    "generate text from a workdir's checkpoint: --prompt (language models) or --source "
    "(encoder-decoders)", ("workdir",), _FLAGS, run)}
