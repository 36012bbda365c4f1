"""Paired data for conditional generation: (source, target) texts -> padded batches.

  synthetic:TASK       generated pairs, TASK one of copy, reverse, sort, addition
                       (seeded by data.synthetic_seed; data.synthetic_min_len..max_len
                       symbols from the first data.synthetic_symbols letters; addition
                       adds two numbers of that many digits)
  tsv:PATH_OR_GLOB     one pair per line: source TAB target
  jsonl:PATH_OR_GLOB   with data.source_key set: one JSON object per line, its
                       data.source_key and data.target_key fields
  tfds:NAME[:VERSION]  with data.source_key set: a TFDS data set's data.source_key and
                       data.target_key text features, e.g. tfds:wmt14_translate/de-en
                       with source_key='de', target_key='en' (a Translation feature's
                       languages); read lazily as the LM's tfds: documents are

Files split by data.pair_split (the rules: data/splits.py). 'hashed' (the default)
holds out about val_fraction of the pairs, chosen by a hash of their text, never by
their place in the file: pair files are often sorted (by headword, by section, by
source), so their tail is not a sample of them (the Ding pairs' last 10% are mostly
its proverbs). Pairs that share a source or a target text fall on the same side, so
no text the model trained on is scored as unseen. 'tail' holds out the last
ceil(val_fraction * n) pairs, as the LM's local sources do. TFDS data sets keep
their own splits (data.train_split, data.eval_split).

A batch holds "source" [B, S] (source ids + eos, padded) with
"source_segment_ids" (1 on tokens, 0 on padding), "inputs" (bos + target ids),
"targets" (target ids + eos) and "segment_ids" [B, T], and "weights" (1 on
target tokens, 0 on padding): the loss counts target tokens only. Longer
sources are cut to data.source_len (still ending in eos), longer targets to
data.seq_len. With data.mode='pack', training rows hold several pairs each
(segment ids 1, 2, ... and positions on both sides: jaxgen/data/packing.py);
evaluation stays one pair per row.
"""

from __future__ import annotations

import collections.abc
import json
import operator
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxgen.data import splits
from jaxgen.errors import UserError
from jaxgen.messages import count

TASKS = ("copy", "reverse", "sort", "addition")
PAIRED_SCHEMES = ("synthetic", "tsv")
_SPLIT_IDS = {"train": 0, "eval": 1}


def is_paired(data_cfg: Any) -> bool:
  """Whether `data.source` gives (source, target) pairs rather than documents."""
  scheme, _, rest = str(data_cfg.source).partition(":")
  if scheme == "store":  # what the store holds, where it can be read
    try:
      with open(os.path.join(os.path.expanduser(rest), "manifest.json")) as f:
        return json.load(f).get("task") == "seq2seq"
    except (OSError, ValueError):
      return False  # opening the store says what is wrong
  return scheme in PAIRED_SCHEMES or (scheme in ("jsonl", "tfds")
                                      and bool(data_cfg.get("source_key")))


def is_pair_file(data_cfg: Any) -> bool:
  """Whether the pairs come from tsv/jsonl files, which data.pair_split splits."""
  return is_paired(data_cfg) and str(data_cfg.source).partition(":")[0] in ("tsv", "jsonl")


def pairs(data_cfg: Any, split: str) -> Sequence[tuple[str, str]]:
  """The (source, target) pairs of `split` ("train" or "eval"), random access."""
  scheme, _, rest = str(data_cfg.source).partition(":")
  if scheme == "store":
    from jaxgen.data import store
    return store.split_of(data_cfg, split)
  if scheme == "synthetic":
    return Synthetic(rest, split, data_cfg)
  if scheme == "tfds":
    return _tfds_pairs(data_cfg, split)
  return _file_pairs(data_cfg, scheme, rest)[split]


def train_and_eval(data_cfg: Any) -> tuple[Sequence[tuple[str, str]], Sequence[tuple[str, str]]]:
  """Both splits, a file source read and split once (not once per split)."""
  if is_pair_file(data_cfg):
    scheme, _, rest = str(data_cfg.source).partition(":")
    split = _file_pairs(data_cfg, scheme, rest)
    return split["train"], split["eval"]
  return pairs(data_cfg, "train"), pairs(data_cfg, "eval")


def vocabulary_texts(train: Sequence[tuple[str, str]], evaluate: Sequence[tuple[str, str]]):
  """Texts a character vocabulary must cover: every side of every pair (a synthetic
  task's symbols alone)."""
  if isinstance(train, Synthetic):
    yield train.symbols()
    return
  if getattr(train, "pretokenized", False):  # a store: its tokenizer is fixed
    return
  for split in (train, evaluate):
    for source, target in split:
      yield source
      yield target


class Synthetic(collections.abc.Sequence):
  """Generated pairs; pair i of a split depends only on (seed, split, i)."""

  def __init__(self, task: str, split: str, data_cfg: Any):
    if task not in TASKS:
      raise UserError(f"data.source 'synthetic:{task}' names no task; use one of "
                      + ", ".join(f"synthetic:{t}" for t in TASKS))
    self.task, self.split = task, split
    self.seed = data_cfg.synthetic_seed
    self.lo, self.hi = data_cfg.synthetic_min_len, data_cfg.synthetic_max_len
    self.letters = "abcdefghijklmnopqrstuvwxyz"[:data_cfg.synthetic_symbols]
    self.size = (data_cfg.synthetic_train_examples if split == "train"
                 else data_cfg.synthetic_eval_examples)

  def symbols(self) -> str:
    return "0123456789+" if self.task == "addition" else self.letters

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    i = operator.index(index)
    if not -self.size <= i < self.size:
      raise IndexError(f"pair {i} out of range for {self.size} pairs")
    rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i % self.size])
    n = int(rng.integers(self.lo, self.hi + 1))
    if self.task == "addition":
      a, b = (int("".join(map(str, rng.integers(0, 10, n)))) for _ in range(2))
      return f"{a}+{b}", str(a + b)
    text = "".join(np.asarray(list(self.letters))[rng.integers(0, len(self.letters), n)])
    target = {"copy": text, "reverse": text[::-1], "sort": "".join(sorted(text))}[self.task]
    return text, target

  def __repr__(self) -> str:
    return (f"Synthetic({self.task}, {self.split}, seed={self.seed}, lengths={self.lo}.."
            f"{self.hi}, pairs={self.size})")


class _Pairs(collections.abc.Sequence):
  """A split of file pairs (picklable, short repr for Grain)."""

  def __init__(self, items: list[tuple[str, str]], description: str):
    self._items, self._description = items, description

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index):
    return self._items[index]

  def __repr__(self) -> str:
    return f"Pairs({self._description}, pairs={len(self)})"


class _TfdsPairs(collections.abc.Sequence):
  """A split of TFDS records, read as (source, target) pairs on access (short repr for
  Grain's checkpoints)."""

  def __init__(self, records: Sequence, description: str, source_key: str, target_key: str):
    self._records, self._description = records, description
    self._keys = (source_key, target_key)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    i, n = operator.index(index), len(self)
    if not -n <= i < n:
      raise IndexError(f"pair {i} out of range for {n} pairs")
    record = self._records[i % n]
    return tuple(_text(record[key]) for key in self._keys)

  def __repr__(self) -> str:
    return f"Pairs({self._description}, {self._keys[0]} -> {self._keys[1]}, pairs={len(self)})"


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value  # TFDS Text: bytes


def _tfds_pairs(data_cfg: Any, split: str) -> _TfdsPairs:
  from jaxgen.data import sources  # the LM's TFDS reader: preparing, splits, errors
  keys = {"source_key": data_cfg.source_key, "target_key": data_cfg.target_key}
  records, description = sources.tfds_records(data_cfg, split, keys)
  return _TfdsPairs(records, description, *keys.values())


def _file_pairs(data_cfg: Any, scheme: str, pattern: str) -> dict[str, _Pairs]:
  from jaxgen.data import readers, sources  # pylint: disable=import-outside-toplevel
  items = []
  paths = sources._match_files(pattern, data_cfg.source, scheme)
  if sources.reads_lazily(data_cfg, paths):
    from jaxgen.data import lazy_files  # pylint: disable=import-outside-toplevel
    return lazy_files.pair_splits(data_cfg, paths)
  for path in paths:
    items.extend(readers.file_records(data_cfg, path))
  keys = np.array([splits.pair_keys(s, t) for s, t in items], np.uint64).reshape(-1, 3)
  held = splits.pair_holdout(data_cfg, keys, lambda idx: [items[i] for i in idx]).tolist()
  train = [pair for pair, h in zip(items, held) if not h]
  evaluate = [pair for pair, h in zip(items, held) if h]
  return {"train": _Pairs(train, f"{data_cfg.source} train"),
          "eval": _Pairs(evaluate, f"{data_cfg.source} eval")}


def make_pair_dataset(items: Sequence[tuple[str, str]], tokenizer: Any, *, source_len: int,
                      target_len: int, batch_size: int, seed: int, shuffle: bool = True,
                      repeat: bool = True, shard_index: int = 0, shard_count: int = 1,
                      prefetch: int = 2, pack: bool = False):
  """Padded batches of this host's share of `items` (see the module docstring), or
  with `pack` several pairs per row (jaxgen/data/packing.py).

  `repeat=False` is one pass whose last batch is filled with weight-0 rows.
  Returns a checkpointable `grain.IterDataset`.
  """
  import grain  # lazily: config checks import this module before anything heavy
  if getattr(items, "pretokenized", False):  # a store's pairs: ids already
    from jaxgen.data.store import Pretokenized
    tokenizer = Pretokenized(tokenizer)
  if len(items) < shard_count:
    raise UserError(f"the data has {count(len(items), 'pair')}, fewer than the "
                    f"{shard_count} hosts")
  ds = grain.MapDataset.source(items)[shard_index::shard_count]
  if shuffle:
    ds = ds.shuffle(seed % 2**32)  # reshuffled per epoch by repeat
  if repeat:
    ds = ds.repeat()
  if pack:
    from jaxgen.data import packing, pipeline  # pylint: disable=import-outside-toplevel
    ds = ds.map(_EncodeUnpadded(tokenizer, source_len, target_len)).to_iter_dataset(
        pipeline.read_options(prefetch))
    ds = packing.packed_batches(
        ds, {"source": source_len, "inputs": target_len, "targets": target_len},
        pad_id=tokenizer.pad_id, batch_size=batch_size, seed=seed, shuffle=shuffle,
        drop_remainder=repeat)
    if prefetch:  # packing and batching one step ahead in a thread
      ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
    return ds
  ds = ds.map(_Encode(tokenizer, source_len, target_len))
  ds = ds.batch(batch_size, drop_remainder=repeat, batch_fn=_Batch(batch_size))
  threads = min(prefetch, 4)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
  return ds


def decode_examples(items: Sequence, n: int, tokenizer: Any) -> list[tuple[str, str]]:
  """The first n pairs as texts (a store's are decoded from its ids)."""
  if getattr(items, "pretokenized", False):
    return items.texts(n, tokenizer)
  return list(items[:min(n, len(items))])


def encode_source(tokenizer: Any, text: str, source_len: int) -> np.ndarray:
  """Source ids + eos, at most `source_len` tokens: a longer source is cut, and still
  ends in eos."""
  ids = np.asarray(tokenizer.encode(text), np.int32)[:source_len - 1]
  return np.concatenate([ids, [tokenizer.eos_id]]).astype(np.int32)


def encode_pair(tokenizer: Any, pair: tuple[str, str], source_len: int,
                target_len: int) -> dict[str, np.ndarray]:
  """One pair, unpadded: "source" (ids + eos), "inputs" (bos + target ids) and
  "targets" (target ids + eos), each cut to its width."""
  tgt = np.asarray(tokenizer.encode(pair[1]), np.int32)
  return {"source": encode_source(tokenizer, pair[0], source_len),
          "inputs": np.concatenate([[tokenizer.bos_id], tgt]).astype(np.int32)[:target_len],
          "targets": np.concatenate([tgt, [tokenizer.eos_id]]).astype(np.int32)[:target_len]}


class _EncodeUnpadded:
  """(source, target) texts -> the unpadded arrays that pack mode packs (in the read threads)."""

  def __init__(self, tokenizer: Any, source_len: int, target_len: int):
    self.tokenizer, self.source_len, self.target_len = tokenizer, source_len, target_len

  def __call__(self, pair: tuple[str, str]) -> dict[str, np.ndarray]:
    return encode_pair(self.tokenizer, pair, self.source_len, self.target_len)


class _Encode:
  """(source, target) texts -> fixed-width padded rows."""

  def __init__(self, tokenizer, source_len: int, target_len: int):
    self.tokenizer, self.source_len, self.target_len = tokenizer, source_len, target_len

  def __call__(self, pair: tuple[str, str]) -> dict[str, np.ndarray]:
    tok = self.tokenizer
    row = encode_pair(tok, pair, self.source_len, self.target_len)
    src, inputs, targets = row["source"], row["inputs"], row["targets"]

    def pad(x, width):
      return np.pad(x, (0, width - len(x)), constant_values=tok.pad_id)

    return {"source": pad(src, self.source_len),
            "source_segment_ids": (np.arange(self.source_len) < len(src)).astype(np.int32),
            "inputs": pad(inputs, self.target_len), "targets": pad(targets, self.target_len),
            "segment_ids": (np.arange(self.target_len) < len(inputs)).astype(np.int32)}


class _Batch:
  """Stacks rows; a short last batch of a single pass gets weight-0 rows."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size

  def __call__(self, rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    real = len(rows)
    rows = list(rows) + [rows[-1]] * (self.batch_size - real)
    batch = {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}
    weights = (batch["segment_ids"] != 0).astype(np.float32)
    weights[real:] = 0.0
    batch["weights"] = weights
    return batch
