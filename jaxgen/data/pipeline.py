"""Grain input pipeline: documents -> host-local training batches.

`make_dataset` returns a `grain.IterDataset` whose iterator is deterministic
for a seed and checkpointable: `it.get_state()` is a small JSON-able dict, and
`iter(make_dataset(<same args>)).set_state(state)` continues with exactly the
next batch, background prefetch included. Three modes:

- "windows": nanoGPT's random windows over the concatenated token stream
  (docs each followed by eos). Global batch j draws its `shard_count *
  batch_size` window starts from `default_rng([seed, j])` and host h keeps
  rows [h*b, (h+1)*b), so the global stream does not depend on the number of
  hosts, and one host reproduces `WindowSampler` batch for batch.
- "concat": the same stream cut into consecutive non-overlapping chunks of
  seq_len+1 tokens, shuffled per epoch.
- "pack": each document is [bos] + ids + [eos], cut into pieces of at most
  seq_len+1 tokens (consecutive pieces share their boundary token so that no
  next-token pair is lost); each piece x becomes inputs=x[:-1],
  targets=x[1:], and Grain's first-fit packing puts these pairs into rows of
  seq_len with common segment ids and positions. Every target is therefore
  the next token of its own document and the loss weight is simply
  `segment_ids != 0`.

Concat and pack shard the documents (`docs[shard_index::shard_count]`);
windows shard the rows of each global batch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import grain
import numpy as np

from jaxgen.data import packing
from jaxgen.data.batches import WindowSampler
from jaxgen.errors import UserError
from jaxgen.messages import count

MODES = ("windows", "concat", "pack")


class PipelineTokenizer(Protocol):
  """What the pipeline needs from a tokenizer."""

  bos_id: int
  eos_id: int
  pad_id: int

  def encode(self, text: str) -> np.ndarray:
    ...


def make_dataset(docs: Sequence[str], tokenizer: PipelineTokenizer, *,
                 seq_len: int, batch_size: int, mode: str, seed: int,
                 shuffle: bool = True, repeat: bool = True, shard_index: int = 0,
                 shard_count: int = 1, prefetch: int = 2) -> grain.IterDataset:
  """Batches of int32 [batch_size, seq_len] arrays for this host.

  Keys: "inputs", "targets"; pack mode adds "segment_ids", "positions"
  (int32) and "weights" (float32, 0 at padding). `batch_size` is per host.
  `repeat=False` is one pass (validation): windows gives about one stream's
  worth of batches, concat drops the chunks that do not fill a last batch,
  pack pads its last batch with empty (weight 0) rows. `shuffle` has no
  effect on windows, which are random by construction. `prefetch` batches
  are prepared in background threads (0: everything on the caller's thread).
  """
  if mode not in MODES:
    raise UserError(f"data mode {mode!r} is unknown; use one of {', '.join(MODES)}")
  if batch_size < 1:
    raise UserError(f"data.batch_size is {batch_size}; it must be at least 1")
  if seq_len < 1:
    raise UserError(f"data.seq_len is {seq_len}; it must be at least 1")
  if prefetch < 0:
    raise UserError(f"data prefetch is {prefetch}; it must be 0 or more")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} is outside [0, {shard_count})")
  if mode != "windows" and len(docs) < shard_count:  # windows split rows, not documents
    raise UserError(f"the data has {count(len(docs), 'document')}, fewer than the "
                    f"{shard_count} hosts that each need some; use more data "
                    "or fewer hosts")
  if getattr(docs, "pretokenized", False):  # a token store's documents: ids already
    from jaxgen.data.store import Pretokenized
    tokenizer = Pretokenized(tokenizer)
  if mode == "windows":
    ds = _windows(docs, tokenizer, seq_len, batch_size, seed, repeat,
                  shard_index, shard_count, prefetch)
  elif mode == "concat":
    ds = _concat(docs, tokenizer, seq_len, batch_size, seed, shuffle, repeat,
                 shard_index, shard_count, prefetch)
  else:
    ds = _pack(docs, tokenizer, seq_len, batch_size, seed, shuffle, repeat,
               shard_index, shard_count, prefetch)
  if prefetch:
    # Whatever is left sequential (packing, batching) runs one step ahead in
    # a thread; the iterator's state still points at the consumer's position.
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  return ds


def token_stream(docs: Sequence[str], tokenizer: PipelineTokenizer) -> np.ndarray:
  """All docs' ids concatenated, each doc followed by eos: int32 [n] (for a token
  store's documents, a store.TokenStream read from its memory maps)."""
  if hasattr(docs, "stream"):
    return docs.stream()
  eos_1 = np.asarray([tokenizer.eos_id], np.int32)
  parts = []
  for i in range(len(docs)):
    parts.append(np.asarray(tokenizer.encode(docs[i]), np.int32))
    parts.append(eos_1)
  return np.concatenate(parts) if parts else np.zeros([0], np.int32)


def doc_pieces(ids: np.ndarray, tokenizer: PipelineTokenizer,
               seq_len: int) -> list[dict[str, np.ndarray]]:
  """[bos] + ids + [eos] as (inputs, targets) pairs of at most seq_len tokens.

  Pieces of seq_len+1 tokens start every seq_len tokens, so consecutive
  pieces share one token and every next-token pair of the document is
  predicted exactly once.
  """
  x = np.concatenate([[tokenizer.bos_id], np.asarray(ids, np.int32),
                      [tokenizer.eos_id]]).astype(np.int32)
  pieces = []
  for start in range(0, len(x) - 1, seq_len):
    end = min(start + seq_len, len(x) - 1)  # last input: the token before eos
    pieces.append({"inputs": x[start:end], "targets": x[start + 1:end + 1]})
  return pieces


def read_options(prefetch: int) -> grain.ReadOptions:
  # Threads, never processes: tests run in-process and forking next to JAX
  # is fragile. The tokenizers and numpy release the GIL for the heavy parts.
  threads = min(prefetch, os.cpu_count() or 1, 4)
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch)


# Windows.


class _WindowBatch:
  """Local batch j: this host's rows of WindowSampler's global batch j."""

  def __init__(self, sampler: WindowSampler, first_row: int, rows: int):
    self.sampler, self.first_row, self.rows = sampler, first_row, rows

  def __call__(self, j: int) -> dict[str, np.ndarray]:
    # Every host draws the whole global batch and keeps its own rows.
    rows = slice(self.first_row, self.first_row + self.rows)
    return {k: v[rows] for k, v in self.sampler.batch(int(j)).items()}


def _windows(docs, tokenizer, seq_len, batch_size, seed, repeat, shard_index,
             shard_count, prefetch) -> grain.IterDataset:
  tokens = token_stream(docs, tokenizer)
  if len(tokens) < seq_len + 1:
    raise UserError(f"the data has {count(len(tokens), 'token')} but one window needs "
                    f"seq_len+1 = {seq_len + 1}; use a longer corpus or lower "
                    "data.seq_len")
  global_rows = batch_size * shard_count
  # One pass: about as many window tokens as the stream holds.
  num_batches = (sys.maxsize if repeat
                 else max(1, (len(tokens) - 1) // (seq_len * global_rows)))
  make = _WindowBatch(WindowSampler(tokens, global_rows, seq_len, seed),
                      shard_index * batch_size, batch_size)
  return grain.MapDataset.range(num_batches).map(make).to_iter_dataset(
      read_options(prefetch))


def windows_state(batch_index: int) -> dict[str, Any]:
  """The state of a windows iterator about to produce global batch `batch_index`,
  whatever the number of hosts."""
  return {"next_index": int(batch_index)}


# Concatenate and split.


def _split_chunks(chunks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
  chunks_BL = np.stack(chunks)
  return {"inputs": np.ascontiguousarray(chunks_BL[:, :-1]),
          "targets": np.ascontiguousarray(chunks_BL[:, 1:])}


def _concat(docs, tokenizer, seq_len, batch_size, seed, shuffle, repeat,
            shard_index, shard_count, prefetch) -> grain.IterDataset:
  mine = (docs[shard_index::shard_count] if hasattr(docs, "stream")
          else [docs[i] for i in range(shard_index, len(docs), shard_count)])
  stream = token_stream(mine, tokenizer)
  num_chunks = len(stream) // (seq_len + 1)
  if num_chunks < (1 if repeat else batch_size):
    raise UserError(
        f"host {shard_index}'s {count(len(stream), 'token')} make "
        f"{count(num_chunks, 'chunk')} of "
        f"seq_len+1 = {seq_len + 1}, too few for a batch of {batch_size}; use "
        "more data, a lower data.seq_len or a smaller batch")
  if isinstance(stream, np.ndarray):
    chunks_NL = stream[:num_chunks * (seq_len + 1)].reshape(num_chunks, seq_len + 1)
  else:  # read from the store's memory maps chunk by chunk
    chunks_NL = _Chunks(stream, seq_len + 1, num_chunks)
  ds = grain.MapDataset.source(chunks_NL)
  if shuffle:
    ds = ds.shuffle(seed % 2**32)  # reshuffled per epoch by repeat
  if repeat:
    ds = ds.repeat()
  # Batching the MapDataset keeps the iterator state a single index.
  ds = ds.batch(batch_size, drop_remainder=True, batch_fn=_split_chunks)
  return ds.to_iter_dataset(read_options(prefetch))


class _Chunks(Sequence):
  """Chunk i of a token stream: tokens [i * width, (i + 1) * width)."""

  def __init__(self, stream, width: int, n: int):
    self.stream, self.width, self.n = stream, width, n

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> np.ndarray:
    if not 0 <= i < self.n:
      raise IndexError(i)
    return self.stream.read(i * self.width, self.width)


# Packing.


class _Pieces:
  """Document -> its (inputs, targets) pieces (runs in the read threads)."""

  def __init__(self, tokenizer: PipelineTokenizer, seq_len: int):
    self.tokenizer, self.seq_len = tokenizer, seq_len

  def __call__(self, doc: str) -> list[dict[str, np.ndarray]]:
    return doc_pieces(self.tokenizer.encode(doc), self.tokenizer, self.seq_len)


class _Flatten(grain.experimental.FlatMapTransform):
  max_fan_out = sys.maxsize  # unused by the iterator version; pieces are unbounded

  def flat_map(self, element):
    return element


def _pack(docs, tokenizer, seq_len, batch_size, seed, shuffle, repeat,
          shard_index, shard_count, prefetch) -> grain.IterDataset:
  ds = grain.MapDataset.source(docs)[shard_index::shard_count]
  if shuffle:
    ds = ds.shuffle(seed % 2**32)  # reshuffled per epoch by repeat
  if repeat:
    ds = ds.repeat()
  # Tokenize a few batches' worth of documents ahead in the read threads.
  read = read_options(prefetch)
  if prefetch:
    read = grain.ReadOptions(num_threads=read.num_threads,
                             prefetch_buffer_size=4 * max(batch_size, 16))
  ds = ds.map(_Pieces(tokenizer, seq_len)).to_iter_dataset(read)
  ds = grain.experimental.FlatMapIterDataset(ds, _Flatten())
  return packing.packed_batches(ds, {"inputs": seq_len, "targets": seq_len},
                                pad_id=tokenizer.pad_id, batch_size=batch_size, seed=seed,
                                shuffle=shuffle, drop_remainder=repeat)


# Inspection.


def describe(batch: dict[str, Any], tokenizer: Any, max_rows: int | None = None) -> str:
  """Renders a batch for `jaxgen data inspect`: one decoded line per row.

  Special ids show as <bos>/<eos>/<pad>; in packed batches ' | ' separates
  segments and padding (segment id 0) is counted, not printed.
  """
  inputs_BT = np.asarray(batch["inputs"])
  segment_ids_BT = batch.get("segment_ids")
  rows, cols = inputs_BT.shape
  lines = [f"{count(rows, 'row')} x {count(cols, 'token')}; keys: {', '.join(sorted(batch))}"]
  if segment_ids_BT is not None:
    segment_ids_BT = np.asarray(segment_ids_BT)
    pad = int(np.sum(segment_ids_BT == 0))
    segments = sum(len(np.unique(r[r != 0])) for r in segment_ids_BT)
    lines.append(f"padding: {pad} of {count(rows * cols, 'token')} "
                 f"({100 * pad / (rows * cols):.1f}%), {count(segments, 'segment')}")
  for b in range(rows if max_rows is None else min(rows, max_rows)):
    ids = inputs_BT[b]
    if segment_ids_BT is None:
      lines.append(f"row {b}: {_render(ids, tokenizer)}")
      continue
    seg = segment_ids_BT[b]
    parts = [_render(ids[seg == s], tokenizer) for s in _in_order(seg[seg != 0])]
    pad = int(np.sum(seg == 0))
    lines.append(f"row {b} ({count(len(parts), 'segment')}, {pad} pad): " + " | ".join(parts))
  return "\n".join(lines)


def _in_order(segment_ids: np.ndarray) -> list[int]:
  _, first = np.unique(segment_ids, return_index=True)
  return [int(segment_ids[i]) for i in sorted(first)]


def _render(ids: np.ndarray, tokenizer: Any) -> str:
  # Decode runs of ordinary ids; specials may lie outside the decoder's
  # vocabulary, so they are named here instead.
  specials = {getattr(tokenizer, f"{n}_id", None): f"<{n}>" for n in ("pad", "bos", "eos")}
  specials.pop(None, None)
  out, run = [], []
  for i in np.asarray(ids).tolist():
    if i in specials:
      if run:
        out.append(tokenizer.decode(run))
        run = []
      out.append(specials[i])
    else:
      run.append(i)
  if run:
    out.append(tokenizer.decode(run))
  # One line per row: escape newlines and other control characters.
  return repr("".join(out))[1:-1]
