"""Input-pipeline throughput in pack mode: prints one JSON line.

  python benchmarks/input_throughput.py
  python benchmarks/input_throughput.py --text=PATH --seconds=2

Trains a SentencePiece tokenizer (vocabulary 1024) on the corpus's lines,
then pulls batches from `make_dataset(mode="pack")` over its paragraphs
(split on blank lines): the CPU recipe's 12 x 64 and a bigger 32 x 1024.
Reports the median batch-token rate over `--windows` timed windows after a
warm-up, and compares it with what the CPU recipe consumes (12 * 64 tokens per
~42 ms step, about 18,300 tokens/s).

Reading from a token store (windows and pack, 32 x 1024, beside the in-memory path on
the same documents) is measured by `benchmarks/token_store.py --what=input`.
"""

from __future__ import annotations

import gc
import io
import json
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

from jaxgen.data.pipeline import make_dataset

_DEFAULT_TEXT = (pathlib.Path(__file__).resolve().parents[2]
                 / "shared/data/tiny_shakespeare/input.txt")
_TEXT = flags.DEFINE_string("text", str(_DEFAULT_TEXT), "UTF-8 corpus.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows (the median is reported).")
_SECONDS = flags.DEFINE_float("seconds", 1.0, "Length of one timed window.")
_PREFETCH = flags.DEFINE_integer("prefetch", 2, "make_dataset's prefetch.")

_CPU_RECIPE_TOKENS_PER_S = 12 * 64 / 0.042  # batch 12 x 64 per ~42 ms step


class _SentencePiece:
  """Fallback when jaxgen.data.tokenizer has no SentencePieceTokenizer."""

  def __init__(self, lines: list[str], vocab_size: int):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        byte_fallback=True, character_coverage=1.0, pad_id=0, eos_id=1, bos_id=2,
        unk_id=3, minloglevel=2)
    self._sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    self.pad_id, self.eos_id, self.bos_id = 0, 1, 2

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)


def _tokenizer(lines: list[str], vocab_size: int):
  try:
    from jaxgen.data.tokenizer import SentencePieceTokenizer  # pylint: disable=import-outside-toplevel
  except ImportError:
    return _SentencePiece(lines, vocab_size)
  return SentencePieceTokenizer.train(lines, vocab_size)


def _measure(docs, tokenizer, batch_size: int, seq_len: int) -> dict:
  it = iter(make_dataset(docs, tokenizer, seq_len=seq_len, batch_size=batch_size,
                         mode="pack", seed=0, prefetch=_PREFETCH.value))
  t0 = time.perf_counter()
  for _ in range(3):  # warm-up: thread start, first packing groups
    next(it)
  first_s = time.perf_counter() - t0
  rates, weights = [], []
  for _ in range(_WINDOWS.value):
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < _SECONDS.value:
      batch = next(it)
      weights.append(float(batch["weights"].mean()))
      n += 1
    rates.append(n * batch_size * seq_len / elapsed)
  it.close()
  del it
  gc.collect()  # grain iterators must not outlive the interpreter's modules
  return {"tokens_per_s": round(float(np.median(rates)), 1),
          "non_padding_fraction": round(float(np.mean(weights)), 4),
          "warmup_s": round(first_s, 3), "batch_size": batch_size, "seq_len": seq_len}


def main(argv):
  del argv
  path = pathlib.Path(_TEXT.value)
  if not path.is_file():
    sys.exit(f"input_throughput: no corpus at {path}; pass --text=PATH to a UTF-8 text file")
  text = path.read_text(encoding="utf-8")
  t0 = time.perf_counter()
  tokenizer = _tokenizer([line for line in text.splitlines() if line], 1024)
  train_s = time.perf_counter() - t0
  docs = [p for p in text.split("\n\n") if p.strip()]
  recipe = _measure(docs, tokenizer, 12, 64)
  bigger = _measure(docs, tokenizer, 32, 1024)
  print(json.dumps({
      "benchmark": "input_throughput", **recipe, "mode": "pack",
      "tokenizer": "sentencepiece", "vocab_size": 1024, "documents": len(docs),
      "consumption_tokens_per_s_cpu_recipe": round(_CPU_RECIPE_TOKENS_PER_S, 1),
      "ratio_to_cpu_recipe": round(recipe["tokens_per_s"] / _CPU_RECIPE_TOKENS_PER_S, 2),
      "bigger": bigger, "tokenizer_train_s": round(train_s, 2),
      "prefetch": _PREFETCH.value}))


if __name__ == "__main__":
  app.run(main)
