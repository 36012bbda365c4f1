"""Local document files too large for memory, read lazily: pack mode without a store.

A text or jsonl source larger than data.max_in_memory_mb trains in data.mode='pack'
without being read into memory. One pass at start-up indexes it: for each document
where it lies (file, byte offset, length) and the (hash, length) key its split needs,
about 32 bytes a document, computed in worker processes for large inputs. The
train/validation split is then decided by the rules the in-memory path applies
(data/splits.py, as `jaxgen data prepare` decides it), and each
document is read back from its file when the pipeline asks for it, in the read
threads that tokenize ahead of the step. The documents, their order and so the
batches are those of the in-memory path; memory holds the index, not the text.

Compressed files have no random access and one document larger than the limit
cannot be cut into pieces lazily: both are refused in one line that points to
`jaxgen data prepare --out` (a token store), which streams either.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxgen.data import readers, sources
from jaxgen.data.splits import document_heads
from jaxgen.errors import UserError

_PARALLEL_BYTES = 64 << 20  # smaller inputs are indexed in this process
_UNIT_BYTES = 64 << 20


def splits(data_cfg: Any, scheme: str, paths: list[str]) -> dict[str, LazyDocuments]:
  """{"train", "eval"}: the source's documents, read from their files on demand."""
  hint = ("tokenize it once into a token store (`jaxgen data prepare --config=... "
          "--out=DIR`, then data.source=store:DIR), which streams any input")
  compressed = [p for p in paths if p.endswith(readers.COMPRESSED)]
  if compressed:
    raise UserError(f"data.source {data_cfg.source!r} is larger than data.max_in_memory_mb="
                    f"{data_cfg.max_in_memory_mb} and {compressed[0]} is compressed, which "
                    f"pack mode cannot read lazily; decompress it, or {hint}")
  files, file_ids, offsets, nbytes, hashes, lengths = _index(data_cfg)
  if len(offsets) == 1:
    raise UserError(f"data.source {data_cfg.source!r} is one document larger than "
                    f"data.max_in_memory_mb={data_cfg.max_in_memory_mb}, which pack mode "
                    f"cannot read in pieces; {hint}")
  head = document_heads(data_cfg.source, data_cfg.val_fraction,
                        data_cfg.get("doc_split", "tail"), hashes, lengths)
  train = np.flatnonzero(head != 0)
  held = np.flatnonzero(head >= 0)
  depends_on = data_cfg.get("doc_split", "tail") if data_cfg.val_fraction > 0 else None
  where = (files, file_ids, offsets, nbytes)
  return {
      "train": LazyDocuments(data_cfg, where, train, np.zeros(len(train), np.int64),
                             np.where(head[train] > 0, head[train], -1), "train", depends_on),
      "eval": LazyDocuments(data_cfg, where, held, np.maximum(head[held], 0),
                            np.full(len(held), -1, np.int64), "eval", depends_on)}


def _index(data_cfg: Any) -> tuple:
  """(files, file ids, offsets, bytes, hashes, lengths) of every document, in the
  source's order."""
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
  rows = np.concatenate(parts) if parts else np.zeros([0, 5], np.int64)
  if not len(rows):
    raise UserError(f"data.source {data_cfg.source!r} holds no document")
  return (list(files), rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3].view(np.uint64),
          rows[:, 4])


def _index_unit(args) -> tuple[list[str], np.ndarray]:
  """One unit's documents as int64 rows (file, offset, bytes, hash, length)."""
  from jaxgen.data import store_prepare
  data, unit = args
  cfg = store_prepare._cfg(data)
  paths: dict[str, int] = {}
  rows = []
  for path, offset, nbytes, text in readers.located_records(cfg, unit):
    h, n = store_prepare._record_keys(text)
    rows.append((paths.setdefault(path, len(paths)), offset, nbytes,
                 np.uint64(h).astype(np.int64), n))
  return list(paths), np.asarray(rows, np.int64).reshape(-1, 5)


class _FileTexts:
  """Characters [start, end) of document `docs[i]` (end -1: to its end; a split's cut
  document), read from its file when asked for."""

  def __init__(self, data_cfg: Any, where: tuple, docs: np.ndarray, start: np.ndarray,
               end: np.ndarray):
    self._cfg = data_cfg
    self._files, self._file_ids, self._offsets, self._bytes = where
    self._docs, self._start, self._end = docs, start, end

  def __len__(self) -> int:
    return len(self._docs)

  def __getitem__(self, i: int) -> str:
    d = int(self._docs[i])
    text = readers.record_at(self._cfg, self._files[int(self._file_ids[d])],
                             int(self._offsets[d]), int(self._bytes[d]))
    start, end = int(self._start[i]), int(self._end[i])
    return text[start:] if end < 0 else text[start:end]


class LazyDocuments(sources.Documents):
  """One split's documents, each read from its file when asked for."""

  def __init__(self, data_cfg: Any, where: tuple, docs: np.ndarray, start: np.ndarray,
               end: np.ndarray, split: str, doc_split: str | None):
    super().__init__(_FileTexts(data_cfg, where, docs, start, end),
                     f"{data_cfg.source!r}, split={split!r}, read lazily", doc_split=doc_split)
