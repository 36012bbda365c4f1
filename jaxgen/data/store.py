"""The token store: a source tokenized once, read by memory map (`data.source=store:DIR`).

Layout (written by `jaxgen data prepare --out=DIR`, data/store_prepare.py):

  DIR/manifest.json            written last: a store without it is incomplete
  DIR/tokenizer.json           the tokenizer's spec (its sha256 in the manifest)
  DIR/shards/NNNNN.F.bin       feature F's token ids of every record of unit NNNNN,
                               end to end (uint16 where the vocabulary fits, else uint32)
  DIR/shards/NNNNN.F.idx.npy   int64 [records + 1]: where each record starts in .bin
  DIR/shards/NNNNN.keys.npy    uint64 per record: text hashes and lengths (the split's input)
  DIR/shards/NNNNN.json        the unit's summary and its files' checksums: written last,
                               so a unit with it is finished
  DIR/splits/SPLIT.npy         int64 [records, 2]: (shard, record) of each record of the
                               split, in the source's order

Features: an LM store ("lm") holds "tokens", each document's ids followed by eos,
so a split's token stream (windows, concat) is its records' ranges end to end; a
seq2seq store holds "source" and "target", each pair's ids without specials.
Why flat files and np.memmap rather than ArrayRecord: windows read any
seq_len+1 tokens at any offset, which is one slice of a memory map, while
record formats read and parse whole records; and a store is a directory of
plain files that any tool (nanoGPT's `np.memmap`) can read.

Opening reads the manifest and checks every file's size (a truncated or missing
file is refused in one line naming it and the command that rebuilds the store);
`verify()` checks every checksum (`jaxgen data inspect` does).
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import mmap
import operator
import os
import pathlib
from typing import Any

import numpy as np

from jaxgen.errors import UserError
from jaxgen.messages import count

FORMAT = "jaxgen-token-store"
VERSION = 1
FEATURES = {"lm": ("tokens",), "seq2seq": ("source", "target")}
SCHEME = "store"


def dtype_for(vocab_size: int) -> str:
  return "uint16" if vocab_size <= 1 << 16 else "uint32"


def sha256_file(path: str | os.PathLike[str]) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def file_entry(path: pathlib.Path) -> dict[str, Any]:
  return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def rebuild_hint(manifest_or_dir: Any) -> str:
  command = (manifest_or_dir.get("command") if isinstance(manifest_or_dir, dict) else None)
  return (f"rebuild it with `{command}`" if command else
          "rebuild it with `jaxgen data prepare --config=... --out=DIR` (the same command "
          "that made it)")


def _prepare_command(directory: pathlib.Path) -> str | None:
  try:  # written when a prepare starts, so even an unfinished store names its command
    return json.loads((directory / "prepare.json").read_text())["command"]
  except (OSError, ValueError, KeyError):
    return None


class Store:
  """An opened store: its manifest, tokenizer and splits."""

  def __init__(self, directory: str | os.PathLike[str]):
    self.directory = pathlib.Path(os.path.expanduser(os.fspath(directory)))
    d = self.directory
    if not d.is_dir():
      raise UserError(f"data.source store:{directory}: {d} is not a directory; make a store "
                      "with `jaxgen data prepare --config=... --out=DIR`")
    path = d / "manifest.json"
    if not path.is_file():
      command = _prepare_command(d)
      raise UserError(f"token store {d} is incomplete (no manifest.json: its "
                      f"`jaxgen data prepare` did not finish); "
                      + rebuild_hint({"command": command}).replace("rebuild", "finish"))
    try:
      manifest = json.loads(path.read_text())
    except ValueError:
      raise UserError(f"token store {path} is not JSON; "
                      + rebuild_hint({"command": _prepare_command(d)})) from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
      raise UserError(f"{path} is not a version-{VERSION} jaxgen token store (format "
                      f"{manifest.get('format')!r}, version {manifest.get('version')!r}); "
                      + rebuild_hint(manifest))
    self.manifest = manifest
    self.task = manifest["task"]
    self.features = FEATURES[self.task]
    self.dtype = np.dtype(manifest["dtype"])
    for name, entry in self.files().items():
      f = d / name
      if not f.is_file():
        raise UserError(f"token store {d} is missing {name}; {rebuild_hint(manifest)}")
      if f.stat().st_size != entry["bytes"]:
        raise UserError(f"token store file {f} has {f.stat().st_size:,} bytes, not the "
                        f"{entry['bytes']:,} its manifest records (truncated or changed); "
                        + rebuild_hint(manifest))
    self._maps: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

  def files(self) -> dict[str, dict[str, Any]]:
    """Every file of the store but the manifest: name -> bytes, sha256."""
    out = dict(self.manifest["files"])
    for shard in self.manifest["shards"]:
      out.update(shard["files"])
    return out

  def verify(self) -> int:
    """Checks every file's checksum; returns the bytes checked."""
    total = 0
    for name, entry in self.files().items():
      if sha256_file(self.directory / name) != entry["sha256"]:
        raise UserError(f"token store file {self.directory / name} fails its checksum "
                        f"(damaged or changed); {rebuild_hint(self.manifest)}")
      total += entry["bytes"]
    return total

  def tokenizer(self):
    from jaxgen.data.tokenizer import tokenizer_from_spec
    path = self.directory / "tokenizer.json"
    return tokenizer_from_spec(json.loads(path.read_text()), path)

  def records(self, split: str) -> np.ndarray:
    """int64 [n, 2] (shard, record) of `split`'s records, memory-mapped."""
    return np.load(self.directory / "splits" / f"{split}.npy", mmap_mode="r")

  def arrays(self, shard: int, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, offsets) of a shard's feature, memory-mapped."""
    key = (shard, feature)
    if key not in self._maps:
      name = self.manifest["shards"][shard]["name"]
      base = self.directory / "shards"
      bin_path = base / f"{name}.{feature}.bin"
      ids = (np.memmap(bin_path, dtype=self.dtype, mode="r") if bin_path.stat().st_size
             else np.zeros([0], self.dtype))
      self._maps[key] = (ids, np.load(base / f"{name}.{feature}.idx.npy", mmap_mode="r"))
    return self._maps[key]

  def ranges(self, records: np.ndarray, feature: str) -> np.ndarray:
    """int64 [n, 3] (shard, start, end) of each record's ids of `feature`."""
    records = np.asarray(records)
    out = np.empty([len(records), 3], np.int64)
    shards = np.asarray(records[:, 0])
    out[:, 0] = shards
    # Rows grouped by shard once: a mask per shard would cost shards x records, which
    # grows as the square of the store at start-up.
    order = np.argsort(shards, kind="stable")
    bounds = np.flatnonzero(np.diff(shards[order])) + 1
    for rows in np.split(order, bounds) if len(order) else []:
      offsets = self.arrays(int(shards[rows[0]]), feature)[1]
      index = np.asarray(records[rows, 1])
      out[rows, 1] = offsets[index]
      out[rows, 2] = offsets[index + 1]
    return out

  def __getstate__(self):  # memory maps reopen where they are used (Grain threads share)
    state = dict(self.__dict__)
    state["_maps"] = {}
    return state


def manifest_hashes(data_cfg: Any) -> dict[str, str]:
  """{store directory: sha256 of its manifest.json} for every store the data config reads
  (data.source and data.mixture's components): what a checkpoint records so that a
  store rebuilt or replaced under the same path is not continued as if it were the same."""
  from jaxgen.data import mixture  # pylint: disable=import-outside-toplevel
  sources = ([c.source for c in mixture.parse(data_cfg.mixture)]
             if data_cfg.get("mixture", "") else [data_cfg.source])
  out = {}
  for source in sources:
    scheme, _, rest = str(source).partition(":")
    if scheme == "store":
      out[rest] = hashlib.sha256((open_store(rest).directory / "manifest.json").read_bytes()
                                 ).hexdigest()
  return out


def open_store(directory: str) -> Store:
  """The store at `directory`, opened once per process while its manifest stays the same
  (a store rebuilt in place is opened again)."""
  try:
    st = os.stat(pathlib.Path(os.path.expanduser(directory)) / "manifest.json")
    key = (directory, st.st_mtime_ns, st.st_size, st.st_ino)
  except OSError:
    return Store(directory)  # its one line says what is missing
  if key not in _OPEN:
    _OPEN[key] = Store(directory)
  return _OPEN[key]


_OPEN: dict[tuple, Store] = {}


class TokenStream:
  """Records' ids end to end, read by position without copying the whole: the
  windows and concat modes' token stream over a store."""

  def __init__(self, store: Store, ranges: np.ndarray):
    ranges = np.asarray(ranges, np.int64)
    if len(ranges):  # merge records that follow each other in a shard
      joined = np.ones(len(ranges), bool)
      joined[1:] = (ranges[1:, 0] != ranges[:-1, 0]) | (ranges[1:, 1] != ranges[:-1, 2])
      starts = np.flatnonzero(joined)
      ends = np.append(starts[1:], len(ranges)) - 1
      ranges = np.stack([ranges[starts, 0], ranges[starts, 1], ranges[ends, 2]], axis=1)
    self.store, self.segments = store, ranges
    lengths = ranges[:, 2] - ranges[:, 1] if len(ranges) else np.zeros([0], np.int64)
    self.first = np.concatenate([[0], np.cumsum(lengths)])  # stream position of each

  def __len__(self) -> int:
    return int(self.first[-1])

  def read(self, position: int, n: int) -> np.ndarray:
    """int32 ids [position, position + n) of the stream."""
    out = np.empty([n], np.int32)
    seg = int(np.searchsorted(self.first, position, side="right")) - 1
    done = 0
    while done < n:
      shard, start, end = self.segments[seg]
      at = start + position + done - self.first[seg]
      take = min(n - done, int(end - at))
      out[done:done + take] = self.store.arrays(int(shard), "tokens")[0][at:at + take]
      done += take
      seg += 1
    return out

  def windows(self, starts: np.ndarray, width: int) -> np.ndarray:
    """int32 [len(starts), width]: the windows beginning at `starts`."""
    self._will_need(starts, width)
    return np.stack([self.read(int(s), width) for s in starts])

  def _will_need(self, starts: np.ndarray, width: int) -> None:
    # Page-cold windows read one after another wait for the disk once each (a batch of
    # 32 took 0.3 s on a cold 2 GB store); asking for all of them first lets the kernel
    # fetch them together. Only a hint: the bytes read are the same.
    if not hasattr(mmap, "MADV_WILLNEED"):  # not on every platform
      return
    starts = np.asarray(starts, np.int64)
    segs = np.searchsorted(self.first, starts, side="right") - 1
    shard, start, end = self.segments[segs].T
    at = start + starts - self.first[segs]
    stop = np.minimum(end, at + width)
    itemsize = self.store.dtype.itemsize
    first = at * itemsize
    page = first - first % mmap.ALLOCATIONGRANULARITY
    for s, p, n in zip(shard.tolist(), page.tolist(), (stop * itemsize - page).tolist()):
      ids = self.store.arrays(s, "tokens")[0]
      mapped = getattr(ids, "_mmap", None)  # np.memmap's own map (absent: an empty shard)
      if mapped is not None and n > 0:
        mapped.madvise(mmap.MADV_WILLNEED, p, min(n, len(mapped) - p))


class StoreDocuments(collections.abc.Sequence):
  """An LM split of a store: document i is its ids without the trailing eos.

  `pretokenized` tells the pipeline to take these ids as they are.
  """

  pretokenized = True
  doc_split = None  # decided when the store was made

  def __init__(self, store: Store, split: str, records: np.ndarray | None = None):
    self.store, self.split = store, split
    self._records = store.records(split) if records is None else records

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return StoreDocuments(self.store, self.split, self._records[index])
    i, n = operator.index(index), len(self)
    if not -n <= i < n:
      raise IndexError(f"document {i} out of range for {count(n, 'document')}")
    shard, record = self._records[i % n]
    ids, offsets = self.store.arrays(int(shard), "tokens")
    return np.asarray(ids[offsets[record]:offsets[record + 1] - 1], np.int32)

  def stream(self) -> TokenStream:
    """The documents' ids, each followed by eos, end to end."""
    return TokenStream(self.store, self.store.ranges(self._records, "tokens"))

  def __repr__(self) -> str:
    return f"StoreDocuments({self.store.directory}, split={self.split!r}, documents={len(self)})"


class StorePairs(collections.abc.Sequence):
  """A seq2seq split of a store: pair i is its (source ids, target ids)."""

  pretokenized = True

  def __init__(self, store: Store, split: str, records: np.ndarray | None = None):
    self.store, self.split = store, split
    self._records = store.records(split) if records is None else records

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return StorePairs(self.store, self.split, self._records[index])
    i, n = operator.index(index), len(self)
    if not -n <= i < n:
      raise IndexError(f"pair {i} out of range for {count(n, 'pair')}")
    shard, record = self._records[i % n]
    out = []
    for feature in ("source", "target"):
      ids, offsets = self.store.arrays(int(shard), feature)
      out.append(np.asarray(ids[offsets[record]:offsets[record + 1]], np.int32))
    return tuple(out)

  def texts(self, n: int, tokenizer) -> list[tuple[str, str]]:
    """The first n pairs decoded to text (decoded validation metrics)."""
    return [tuple(tokenizer.decode(ids) for ids in self[i]) for i in range(min(n, len(self)))]

  def __repr__(self) -> str:
    return f"StorePairs({self.store.directory}, split={self.split!r}, pairs={len(self)})"


def split_of(data_cfg: Any, split: str):
  """`split` ("train" | "eval") of a store: data.source, as documents or pairs."""
  store = open_store(str(data_cfg.source).partition(":")[2])
  name = "train" if split == "train" else "eval"
  return (StorePairs if store.task == "seq2seq" else StoreDocuments)(store, name)


class Pretokenized:
  """A tokenizer whose `encode` takes ids already encoded (a store's records)."""

  def __init__(self, tokenizer):
    self._tokenizer = tokenizer
    self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id

  def encode(self, ids) -> np.ndarray:
    return np.asarray(ids, np.int32)

  def __getattr__(self, name):
    return getattr(self._tokenizer, name)
