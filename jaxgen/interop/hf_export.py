"""`jaxgen export --format=hf`: a workdir's checkpoint as a Hugging Face model directory.

Writes config.json, model.safetensors (or shards and their index past
`max_shard_size`), generation_config.json and, where HF can express the
tokenizer, tokenizer.json + tokenizer_config.json. Everything goes into a
temporary directory next to `out`, renamed into place at the end: a failed
export leaves nothing behind; the directory and its files get the modes the
umask gives new ones. Transformers are GPT-2 or Llama layout (`hf_layouts`);
LSTMs become a torch.nn.LSTM state dict (`lstm_export`). Encoder-decoders are
refused in one line, before anything is read: no transformers layout matches
jaxgen's exactly (BART and Marian are post-norm, mBART adds embedding norms,
T5 has relative position biases), and a near match would load and be wrong.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import tempfile

from jaxgen.errors import UserError
from jaxgen.interop import flat_params, hf_layouts, safetensors_io
from jaxgen.interop.hf_tokenizer_export import CannotExport, tokenizer_files
from jaxgen.interop.workdir import umask_modes


def export(workdir: str, out: str, *, step: int | None = None, best: bool = False,
           max_shard_size: str = "5GB") -> pathlib.Path:
  """Exports the newest (or `step`, or `best`) checkpoint of `workdir` into `out`."""
  from jaxgen.models.factory import model_config
  from jaxgen.models.lstm import LSTMConfig
  from jaxgen.sample.restore import restore
  max_bytes = safetensors_io.parse_size(max_shard_size)
  out_dir = pathlib.Path(out).expanduser()
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise UserError(f"--out={out} already exists and is not an empty directory; choose a "
                    "new path")
  _check_family(_run_model_type(workdir), workdir)  # before Orbax reads anything
  _, params, cfg, tokenizer = restore(workdir, step=step, best=best)
  _check_family(cfg.model.get("type"), workdir)  # the checkpoint's own word
  model_cfg = model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len)
  flat = flat_params.flatten(params, getattr(model_cfg, "scan_layers", False))
  # Padded rows are cut back to the tokenizer's ids. An imported model keeps its own
  # vocabulary, which HF checkpoints often make larger than their tokenizer's.
  vocab = tokenizer.vocab_size
  if tokenizer.kind == "hf":
    vocab = max(vocab, cfg.model.get("vocab_size", 0))
  special = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
             "pad_token_id": tokenizer.pad_id}
  if isinstance(model_cfg, LSTMConfig):
    from jaxgen.interop import lstm_export
    config, tensors, extra_files = lstm_export.convert(model_cfg, flat, vocab, special)
  else:
    config = hf_layouts.hf_config(model_cfg, vocab, special)
    tensors, extra_files = hf_layouts.to_hf(model_cfg, flat, vocab), {}
  try:
    tok_files = tokenizer_files(tokenizer)
  except CannotExport as e:
    tok_files = {}
    print(f"jaxgen: warning: the tokenizer is not exported: {e}", file=sys.stderr, flush=True)

  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
  try:
    _write_json(tmp / "config.json", config)
    _write_json(tmp / "generation_config.json", _generation_config(model_cfg, tokenizer))
    safetensors_io.write(tmp, tensors, max_bytes)
    for name, text in {**tok_files, **extra_files}.items():
      (tmp / name).write_text(text, encoding="utf-8")
    umask_modes(tmp, *tmp.iterdir())  # mkdtemp makes 0700, safetensors 0600
    if out_dir.exists():
      out_dir.rmdir()  # empty, checked above
    tmp.rename(out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out_dir


EXPORTS = {"transformer": "Transformer language models (GPT-2 or Llama layout)",
           "lstm": "LSTM language models (a torch.nn.LSTM state dict)"}
_FAMILIES = {"encoder_decoder": "a Transformer encoder-decoder",
             "lstm_attention": "an LSTM encoder-decoder with attention"}


def _check_family(model_type, workdir: str) -> None:
  """One line unless `model_type` (None: not known yet) is a family export writes."""
  if model_type is None or model_type in EXPORTS:
    return
  what = _FAMILIES.get(model_type, f"model.type={model_type!r}")
  raise UserError(f"--workdir={workdir} holds {what}, which --format=hf cannot write (no "
                  "transformers model matches it exactly); export writes "
                  f"{' and '.join(EXPORTS.values())}")


def _run_model_type(workdir: str) -> str | None:
  """model.type in the workdir's config.json (`jaxgen train` and `import` write it)."""
  try:
    return json.loads((pathlib.Path(workdir).expanduser() / "config.json").read_text()
                      )["model"]["type"]
  except (OSError, ValueError, KeyError, TypeError):
    return None  # the checkpoint's config is checked after it is read


def _generation_config(model_cfg, tokenizer) -> dict:
  """Greedy by default; ids jaxgen never generates (pad, bos) suppressed as it does."""
  from jaxgen.sample.batching import never_sampled  # pylint: disable=import-outside-toplevel
  never = list(never_sampled(tokenizer))
  config = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id, "do_sample": False, "suppress_tokens": never}
  if getattr(model_cfg, "max_len", None):
    config["max_length"] = model_cfg.max_len
  return config


def _write_json(path: pathlib.Path, obj) -> None:
  path.write_text(json.dumps(obj, indent=2) + "\n")
