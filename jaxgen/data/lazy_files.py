"""Local files too large for memory, read lazily: pack mode without a store.

A text, jsonl or tsv source larger than data.max_in_memory_mb trains in
data.mode='pack' without being read into memory. One pass at start-up indexes it:
for each record (a document, or a (source, target) pair) where it lies (file, byte
offset, length, its place within the line) and the hash keys its split needs, 48
(a document) or 56 (a pair) bytes, computed in worker processes for large inputs. The
train/validation split is then decided by the rules the in-memory path applies
(data/splits.py, as `jaxgen data prepare` decides it), and each record is read back
from its file when the pipeline asks for it, in the read threads that tokenize ahead
of the step. The records, their order and so the batches are those of the in-memory
path; memory holds the index, not the text.

Compressed files have no random access and one document larger than the limit
cannot be cut into pieces lazily: both are refused in one line that points to
`jaxgen data prepare --out` (a token store), which streams either.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxgen.data import pairs as pairs_lib, readers, sources
from jaxgen.data.splits import document_heads, pair_holdout
from jaxgen.errors import UserError

_PARALLEL_BYTES = 64 << 20  # smaller inputs are indexed in this process
_UNIT_BYTES = 64 << 20


_HINT = ("tokenize it once into a token store (`jaxgen data prepare --config=... "
         "--out=DIR`, then data.source=store:DIR), which streams any input")


def splits(data_cfg: Any, paths: list[str]) -> dict[str, LazyDocuments]:
  """{"train", "eval"}: the source's documents, read from their files on demand."""
  _refuse_compressed(data_cfg, paths)
  where, keys = _index(data_cfg, width=2)
  hashes, lengths = keys[:, 0], keys[:, 1].view(np.int64)
  if len(lengths) == 1:
    raise UserError(f"data.source {data_cfg.source!r} is one document larger than "
                    f"data.max_in_memory_mb={data_cfg.max_in_memory_mb}, which pack mode "
                    f"cannot read in pieces; {_HINT}")
  head = document_heads(data_cfg.source, data_cfg.val_fraction,
                        data_cfg.get("doc_split", "tail"), hashes, lengths)
  train = np.flatnonzero(head != 0)
  held = np.flatnonzero(head >= 0)
  depends_on = data_cfg.get("doc_split", "tail") if data_cfg.val_fraction > 0 else None
  return {
      "train": LazyDocuments(data_cfg, where, train, np.zeros(len(train), np.int64),
                             np.where(head[train] > 0, head[train], -1), "train", depends_on),
      "eval": LazyDocuments(data_cfg, where, held, np.maximum(head[held], 0),
                            np.full(len(held), -1, np.int64), "eval", depends_on)}


def pair_splits(data_cfg: Any, paths: list[str]) -> dict[str, LazyPairs]:
  """{"train", "eval"}: a tsv or jsonl pair source's pairs, read from their files on
  demand, split by data.pair_split as in memory."""
  _refuse_compressed(data_cfg, paths)
  where, keys = _index(data_cfg, width=3)
  every = _Records(data_cfg, where, np.arange(len(keys)))
  held = pair_holdout(data_cfg, keys, lambda idx: [every[int(i)] for i in idx])
  return {"train": LazyPairs(data_cfg, where, np.flatnonzero(~held), "train"),
          "eval": LazyPairs(data_cfg, where, np.flatnonzero(held), "eval")}


def _refuse_compressed(data_cfg: Any, paths: list[str]) -> None:
  compressed = [p for p in paths if p.endswith(readers.COMPRESSED)]
  if compressed:
    raise UserError(f"data.source {data_cfg.source!r} is larger than data.max_in_memory_mb="
                    f"{data_cfg.max_in_memory_mb} and {compressed[0]} is compressed, which "
                    f"pack mode cannot read lazily; decompress it, or {_HINT}")


def _index(data_cfg: Any, width: int) -> tuple[tuple, np.ndarray]:
  """((files, file ids, offsets, bytes, subs) of every record in the source's order,
  their split keys [n, width] as uint64: (hash, length) of a document, `pair_keys`
  of a pair)."""
  from jaxgen.data import store_prepare
  units = readers.plan_units(data_cfg, _UNIT_BYTES)
  total = sum(store_prepare._unit_bytes(u) for u in units)
  workers = (os.cpu_count() or 1) if total > _PARALLEL_BYTES else 1
  data = data_cfg.to_dict()
  files: dict[str, int] = {}
  parts = []
  for found in store_prepare._map(_index_unit, [(data, u) for u in units], workers):
    paths, rows = found
    ids = np.asarray([files.setdefault(p, len(files)) for p in paths], np.int64)
    if len(rows):
      rows[:, 0] = ids[rows[:, 0]]
    parts.append(rows)
  rows = np.concatenate(parts) if parts else np.zeros([0, 4 + width], np.int64)
  if not len(rows):
    raise UserError(f"data.source {data_cfg.source!r} holds no "
                    f"{'pair' if width == 3 else 'document'}")
  assert rows.shape[1] == 4 + width, rows.shape
  where = (list(files), rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])
  return where, rows[:, 4:].view(np.uint64)


def _index_unit(args) -> tuple[list[str], np.ndarray]:
  """One unit's records as int64 rows (file, offset, bytes, sub, *keys)."""
  from jaxgen.data import store_prepare
  data, unit = args
  cfg = store_prepare._cfg(data)
  paths: dict[str, int] = {}
  rows, last, sub = [], None, 0
  for path, offset, nbytes, record in readers.located_records(cfg, unit):
    sub = sub + 1 if (path, offset) == last else 0
    last = (path, offset)
    keys = np.asarray(store_prepare._record_keys(record), np.uint64).astype(np.int64)
    rows.append((paths.setdefault(path, len(paths)), offset, nbytes, sub, *keys.tolist()))
  width = 4 + (3 if readers.task_of(cfg) == "seq2seq" else 2)
  return list(paths), np.asarray(rows, np.int64).reshape(-1, width)


class _Records:
  """Record `records[i]` of an index, read from its file when asked for."""

  def __init__(self, data_cfg: Any, where: tuple, records: np.ndarray):
    self._cfg = data_cfg
    self._files, self._file_ids, self._offsets, self._bytes, self._subs = where
    self._records = records

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    d = int(self._records[i])
    return readers.record_at(self._cfg, self._files[int(self._file_ids[d])],
                             int(self._offsets[d]), int(self._bytes[d]), int(self._subs[d]))


class _FileTexts(_Records):
  """Characters [start, end) of document `docs[i]` (end -1: to its end; a split's cut
  document)."""

  def __init__(self, data_cfg: Any, where: tuple, docs: np.ndarray, start: np.ndarray,
               end: np.ndarray):
    super().__init__(data_cfg, where, docs)
    self._start, self._end = start, end

  def __getitem__(self, i: int) -> str:
    text = super().__getitem__(i)
    start, end = int(self._start[i]), int(self._end[i])
    return text[start:] if end < 0 else text[start:end]


class LazyDocuments(sources.Documents):
  """One split's documents, each read from its file when asked for."""

  def __init__(self, data_cfg: Any, where: tuple, docs: np.ndarray, start: np.ndarray,
               end: np.ndarray, split: str, doc_split: str | None):
    super().__init__(_FileTexts(data_cfg, where, docs, start, end),
                     f"{data_cfg.source!r}, split={split!r}, read lazily", doc_split=doc_split)


class LazyPairs(pairs_lib._Pairs):
  """One split's (source, target) pairs, each read from its file when asked for."""

  def __init__(self, data_cfg: Any, where: tuple, records: np.ndarray, split: str):
    super().__init__(_Records(data_cfg, where, records), f"{data_cfg.source} {split}, read lazily")
