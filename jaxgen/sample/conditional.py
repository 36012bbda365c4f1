"""Generating from sources (conditional models), batched as prompts are (`batching`).

Each source is encoded as in training (its ids + eos) and right-padded to the
model's source length, always the same width, and each output starts from
bos: a source's output does not depend on the others in its batch, so a file
decoded in batches gives the outputs of one-at-a-time decoding. The encoder
runs once per batch of sources; its cross-attention keys/values are reused by
every step and beam.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from jaxgen.data.pairs import encode_source
from jaxgen.errors import UserError
from jaxgen.sample import batching


def generate_from_sources(graphdef, params, tokenizer, sources: Sequence[str], *,
                          source_len: int, max_new_tokens: int, temperature: float = 0.0,
                          top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
                          seed: int = 0, beam_size: int = 0, length_penalty: float = 1.0,
                          repetition_penalty: float = 1.0, truncate: bool = False,
                          report_cut: bool = False) -> list[list[str]]:
  """Per source, `num_samples` output texts (beam search: the best beams, best first).

  A source longer than the model reads is an error, or with `truncate` cut as
  training cuts it (evaluation: its reference still counts in full);
  `report_cut` then says on stderr how many were cut.
  """
  ids, cut = [], 0
  for i, text in enumerate(sources):
    where = "the source" if len(sources) == 1 else f"source {i + 1}"
    try:
      row = np.asarray(tokenizer.encode(text), np.int32)
    except UserError as e:
      raise UserError(f"{where}: {e}") from None
    if len(row) + 1 > source_len:
      if not truncate:
        raise UserError(f"{where} is {len(row)} tokens, but the model reads sources of at "
                        f"most {source_len - 1} (plus eos); shorten it, or cut long ones "
                        "with --truncate_source")
      cut += 1
    ids.append(encode_source(tokenizer, text, source_len))
  if cut and report_cut:
    print(f"jaxgen: cut {cut} of {len(sources)} source{'s' * (len(sources) != 1)} to the "
          f"{source_len - 1} tokens the model reads", file=sys.stderr, flush=True)
  bos = np.asarray([tokenizer.bos_id], np.int32)
  prompts = [bos] * len(ids)
  if beam_size:
    outputs = [list(beams[:num_samples]) for beams in batching.beam_rows(
        graphdef, params, tokenizer, prompts, max_new_tokens, beam_size=beam_size,
        length_penalty=length_penalty, sources=ids, source_width=source_len)]
  else:
    outputs = batching.sampled_rows(
        graphdef, params, tokenizer, prompts, max_new_tokens, num_samples=num_samples,
        seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, sources=ids, source_width=source_len)
  return [[tokenizer.decode(batching.until_eos(t, tokenizer.eos_id)) for t in rows]
          for rows in outputs]
