"""Batched decoding shared by language models (prompts) and conditional models (sources).

Both paths generate through these functions: one batch size, one rule for
the ids never sampled, one way of filling a short last batch and one cut at
eos. Rows are sorted (sampling) or grouped (beam search) by prompt length; a
conditional model's prompts are all bos, so its rows keep their order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxgen.sample import decode

# Rows (prompts x samples, or beams) per decoding call: on 2 CPU cores a batch
# of 64 decodes ~5x as many tokens/s as one row (benchmarks/RESULTS.md), and
# its key/value cache stays small (300 MB for the 6x384 recipe in float32).
BATCH_ROWS = 64


def never_sampled(tokenizer) -> tuple[int, ...]:
  """The ids generation never picks: pad and bos, except an id they share with eos."""
  # No training target is ever pad or bos; an imported tokenizer may give eos
  # their id (GPT-2: bos = eos), and eos must stay possible or no text ends.
  return tuple(sorted({tokenizer.pad_id, tokenizer.bos_id} - {tokenizer.eos_id}))


def sampled_rows(graphdef, params, tokenizer, prompts: Sequence[np.ndarray], num_tokens: int,
                 *, num_samples: int, sources: Sequence[np.ndarray] | None = None,
                 **options) -> list[list[np.ndarray]]:
  """Per prompt, its `num_samples` rows of `num_tokens` sampled tokens.

  Rows of any prompt lengths share a batch of up to `BATCH_ROWS`; sorted by
  length, so a batch's prompts end in the same prefill chunks. Sample s of a
  prompt draws from the stream of (seed, its prompt and source tokens, s),
  so its texts do not depend on the rows batched with it. `sources` (one per
  prompt) and `options` go to `decode.generate`.
  """
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  rows = [(i, s) for i in order for s in range(num_samples)]
  batch = min(BATCH_ROWS, len(rows))
  tokens: list[list[np.ndarray]] = [[None] * num_samples for _ in prompts]
  for start in range(0, len(rows), batch):
    part = rows[start:start + batch]
    filled = _filled(part, batch)
    out = decode.generate(graphdef, params, [prompts[i] for i, _ in filled], num_tokens,
                          vocab_size=tokenizer.vocab_size, exclude_ids=never_sampled(tokenizer),
                          row_ids=[s for _, s in filled],
                          sources=None if sources is None else [sources[i] for i, _ in filled],
                          **options)
    for (i, s), row in zip(part, out):
      tokens[i][s] = row
  return tokens


def beam_rows(graphdef, params, tokenizer, prompts: Sequence[np.ndarray], num_tokens: int, *,
              beam_size: int, length_penalty: float, max_len: int | None = None,
              sources: Sequence[np.ndarray] | None = None,
              source_width: int | None = None) -> list[np.ndarray]:
  """Per prompt, its `beam_size` beams' token rows [K, num_tokens], best first.

  Beam search takes prompts of one length per call: equal lengths are
  batched, up to `BATCH_ROWS` beams per call. `sources` (one per prompt) are
  right-padded to `source_width`.
  """
  from jaxgen.sample.beam import beam_search  # only beam users pay for its import
  by_length: dict[int, list[int]] = {}
  for i, row in enumerate(prompts):
    by_length.setdefault(len(row), []).append(i)
  per_call = max(1, BATCH_ROWS // beam_size)
  tokens: list[np.ndarray] = [None] * len(prompts)
  for group in by_length.values():
    batch = min(per_call, len(group))
    for start in range(0, len(group), batch):
      part = group[start:start + batch]
      filled = _filled(part, batch)
      source = (None if sources is None
                else decode._source_buffer([sources[i] for i in filled], source_width))
      tokens_BKN, _ = beam_search(graphdef, params, np.stack([prompts[i] for i in filled]),
                                  num_tokens, beam_size=beam_size,
                                  length_penalty=length_penalty, eos_id=tokenizer.eos_id,
                                  vocab_size=tokenizer.vocab_size, max_len=max_len,
                                  exclude_ids=never_sampled(tokenizer), source=source)
      for i, beams in zip(part, tokens_BKN):
        tokens[i] = beams
  return tokens


def _filled(part: list, batch: int) -> list:
  # A short last batch is filled up to the batch size by repeating its last
  # row: the compiled program is reused, which costs less than compiling one
  # for the smaller batch.
  return part + [part[-1]] * (batch - len(part))


def until_eos(tokens, eos_id: int) -> np.ndarray:
  """`tokens` up to (not including) the first eos."""
  tokens = np.asarray(tokens)
  ends = np.flatnonzero(tokens == eos_id)
  return tokens[:ends[0]] if ends.size else tokens
