"""Streaming readers: a source's records, a bounded piece at a time.

`plan_units(data_cfg, unit_bytes)` cuts a source into units of about `unit_bytes`
of input each, the same on every host for the same files: a unit is a list of
byte ranges of files (line-based, uncompressed files are cut at any line;
compressed files and whole-file documents are taken whole), or a range of a
TFDS split's records, or one split of a bundled corpus. `read_unit(data_cfg,
unit)` yields the unit's records in the source's order: documents (str) or, for
paired sources, (source, target) texts. This module is the one parser of local
files: the in-memory sources (data/sources.py, data/pairs.py) read each file
through `file_records`, so units read one after another give the records the
in-memory path reads. Nothing holds more than one line, or one whole-file
document, at a time.

Files ending in .gz or .zst are decompressed on the fly.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
from collections.abc import Iterator
from typing import Any

from jaxgen.data import sources
from jaxgen.errors import UserError

COMPRESSED = (".gz", ".zst")
_LINE_SCHEMES = ("jsonl", "tsv")  # and text with data.text_lines
_MIN_UNIT_BYTES = 1 << 20
_READ_BYTES = 1 << 18


@dataclasses.dataclass(frozen=True)
class Unit:
  """One worker's share: byte ranges of files (`end` None: to the end), or records
  [start, end) of a TFDS split, or a bundled split. `split` is None where the
  train/validation split is decided after reading (local files)."""
  index: int
  kind: str  # "files" | "tfds" | "bundled"
  ranges: tuple = ()  # ((path, start, end), ...) for "files"
  split: str | None = None
  start: int = 0
  end: int = 0

  def describe(self) -> str:
    if self.kind == "files":
      first, last = self.ranges[0], self.ranges[-1]
      return (f"{first[0]} bytes {first[1]}.." if len(self.ranges) == 1 else
              f"{first[0]} .. {last[0]}")
    return f"{self.kind} {self.split} [{self.start}, {self.end})"

  def to_json(self) -> dict:
    return {"kind": self.kind, "ranges": [list(r) for r in self.ranges], "split": self.split,
            "start": self.start, "end": self.end}


def task_of(data_cfg: Any) -> str:
  from jaxgen.data import pairs
  return "seq2seq" if pairs.is_paired(data_cfg) else "lm"


def plan_units(data_cfg: Any, unit_bytes: int) -> list[Unit]:
  scheme, rest = sources.parse_source(data_cfg.source)
  if scheme == "synthetic":
    raise UserError(f"data.source {data_cfg.source!r} is generated on the fly from its "
                    "seed; there is nothing to prepare: train on it directly")
  if scheme == "store":
    raise UserError(f"data.source {data_cfg.source!r} is a token store already; prepare "
                    "reads a raw source (text:, jsonl:, tsv:, tfds:, bundled:)")
  if scheme == "bundled":
    return [Unit(i, "bundled", split=split) for i, split in enumerate(sources.SPLITS)]
  if scheme == "tfds":
    return _tfds_units(data_cfg, unit_bytes)
  lines = _by_lines(data_cfg, scheme)
  paths = sources._match_files(rest, data_cfg.source, scheme)
  for path in paths:
    _check_file(path, scheme)
  sizes = [os.path.getsize(os.path.expanduser(p)) for p in paths]
  # At least ~64 units where the input allows (every worker busy on a small corpus),
  # decided by the input alone, so every host and any worker count cut it alike.
  unit_bytes = min(unit_bytes, max(_MIN_UNIT_BYTES, sum(sizes) // 64))
  units, current, size = [], [], 0
  for path, n in zip(paths, sizes):
    if lines and not path.endswith(COMPRESSED):
      cuts = [(path, a, min(a + unit_bytes, n)) for a in range(0, max(n, 1), unit_bytes)]
    else:
      cuts = [(path, 0, None)]
    for cut in cuts:
      current.append(cut)
      size += n if cut[2] is None else cut[2] - cut[1]
      if size >= unit_bytes:
        units.append(Unit(len(units), "files", tuple(current)))
        current, size = [], 0
  if current:
    units.append(Unit(len(units), "files", tuple(current)))
  return units


def _tfds_units(data_cfg: Any, unit_bytes: int) -> list[Unit]:
  units = []
  for split in sources.SPLITS:
    n = len(_tfds_split(data_cfg, split))
    step = max(1, unit_bytes // 1024)  # about unit_bytes of records of ~1 KB
    units += [Unit(0, "tfds", split=split, start=a, end=min(a + step, n))
              for a in range(0, n, step)]
  return [dataclasses.replace(u, index=i) for i, u in enumerate(units)]


def _tfds_split(data_cfg: Any, split: str):
  from jaxgen.data import pairs
  if pairs.is_paired(data_cfg):
    return pairs.pairs(data_cfg, split)
  return sources.documents(data_cfg, split)


def read_unit(data_cfg: Any, unit: Unit) -> Iterator[Any]:
  """The unit's records: str documents, or (source, target) pairs."""
  if unit.kind == "bundled":
    yield from sources.documents(data_cfg, unit.split)
    return
  if unit.kind == "tfds":
    records = _tfds_split(data_cfg, unit.split)
    for i in range(unit.start, unit.end):
      yield records[i]
    return
  for *_, record in located_records(data_cfg, unit):
    yield record


def located_records(data_cfg: Any, unit: Unit) -> Iterator[tuple[str, int, int, Any]]:
  """A "files" unit's records with where they are: (path, byte offset, bytes, record);
  a whole-file document has offset 0 and bytes -1. `record_at` reads one back."""
  scheme = sources.parse_source(data_cfg.source)[0]
  paired = task_of(data_cfg) == "seq2seq"
  for path, start, end in unit.ranges:
    if end is None and not _by_lines(data_cfg, scheme):
      yield path, 0, -1, _whole_document(path)
      continue
    for offset, raw in _lines(path, start, end):
      for record in _parse_line(data_cfg, scheme, paired, path, offset, raw):
        yield path, offset, len(raw), record


def file_records(data_cfg: Any, path: str) -> Iterator[Any]:
  """Every record of one local file, in order, for the sources that read a whole file
  into memory: parsed by the same code as a unit's records. A file with no record (empty
  or whitespace only) is refused."""
  scheme = sources.parse_source(data_cfg.source)[0]
  _check_file(path, scheme)
  if not _by_lines(data_cfg, scheme):
    yield _whole_document(path)
    return
  paired, empty = task_of(data_cfg) == "seq2seq", True
  for offset, raw in _lines(path, 0, None):
    for record in _parse_line(data_cfg, scheme, paired, path, offset, raw):
      empty = False
      yield record
  if empty:
    raise UserError(f"data.source file {path} is empty or whitespace only; "
                    "point data.source at a file with training text")


def record_at(data_cfg: Any, path: str, offset: int, nbytes: int, sub: int = 0) -> Any:
  """The record that `located_records` found at (path, offset, nbytes): the `sub`-th
  of that line (a pair file's line also breaks wherever str.splitlines breaks one)."""
  if nbytes < 0:
    return _whole_document(path)
  with _opened(path) as f:
    f.seek(offset)
    raw = f.read(nbytes)
  scheme = sources.parse_source(data_cfg.source)[0]
  paired = task_of(data_cfg) == "seq2seq"
  for i, record in enumerate(_parse_line(data_cfg, scheme, paired, path, offset, raw)):
    if i == sub:
      return record
  raise UserError(f"data.source file {path} changed while training read it (no record "
                  f"{sub} at byte offset {offset}); restart the run on files that stay put")


def _by_lines(data_cfg: Any, scheme: str) -> bool:
  return scheme in _LINE_SCHEMES or bool(data_cfg.get("text_lines", False))


def _parse_line(data_cfg, scheme, paired, path, offset, raw: bytes):
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"data.source file {path} is not valid UTF-8 (bad byte "
                    f"0x{raw[e.start]:02x} at byte offset {offset + e.start}); convert it "
                    "to UTF-8, e.g. with iconv") from None
  if line.endswith("\n"):
    line = line[:-1]
  if paired:
    # pairs.py splits a file with str.splitlines, which also breaks at \r, \v, \f, ...
    for sub in line.splitlines():
      if not sub.strip():
        continue
      where = _Where(path, offset)
      if scheme == "tsv":
        source, tab, target = sub.partition("\t")
        if not tab or "\t" in target:
          raise UserError(f"{where} is not 'source TAB target' (it has "
                          f"{sub.count(chr(9))} tabs); write one pair per line")
        yield source, target
      else:
        yield _json_pair(sub, where, data_cfg.source_key, data_cfg.target_key)
    return
  if not line.strip():
    return
  if scheme == "jsonl":
    where = _Where(path, offset)
    yield _json_document(line, where, data_cfg.get("text_key", "text"))
  else:
    yield line.rstrip("\r")


def _json_document(line: str, where: str, key: str) -> str:
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise UserError(f"{where} is not JSON ({e.msg}, column {e.colno}); a jsonl: source "
                    f"needs one object per line with a {key!r} field") from None
  if not isinstance(record, dict) or key not in record:
    has = (f"keys: {', '.join(map(repr, list(record)[:10]))}" if isinstance(record, dict)
           else f"it is a JSON {_json_type(record)}")
    raise UserError(f"{where} has no key {key!r} ({has}); set data.text_key to the field "
                    "that holds the text")
  if not isinstance(record[key], str):
    raise UserError(f"{where}: {key!r} is a JSON {_json_type(record[key])}, not a string; "
                    "set data.text_key to the field that holds the text")
  return record[key]


def _json_type(value: Any) -> str:
  names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
  return names.get(type(value), "number")


def _json_pair(line: str, where: str, source_key: str, target_key: str) -> tuple[str, str]:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise UserError(f"{where} is not JSON ({e.msg}); write one object per line") from None
  for key in (source_key, target_key):
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
      raise UserError(f"{where} has no string field {key!r} (data.source_key="
                      f"{source_key!r}, data.target_key={target_key!r})")
  return obj[source_key], obj[target_key]


def open_binary(path: str):
  """The file's bytes, decompressed for .gz and .zst."""
  expanded = os.path.expanduser(path)
  if path.endswith(".gz"):
    return gzip.open(expanded, "rb")
  if path.endswith(".zst"):
    import zstandard  # pylint: disable=import-outside-toplevel
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(expanded, "rb"),
                                                                         closefd=True))
  return open(expanded, "rb")


def _lines(path: str, start: int, end: int | None) -> Iterator[tuple[int, bytes]]:
  """(offset, line) for the lines that begin in [start, end): a range cut inside a
  line leaves it to the range where it begins."""
  with _opened(path) as f:
    offset = 0
    if start:
      f.seek(start - 1)
      offset = start - 1 + len(f.readline())  # the rest of the line begun before start
    # Lines cut from large reads: readline takes a line longer than its buffer (most
    # jsonl documents) piece by piece, at a third of the speed.
    parts = []  # the start of a line that goes on in the next read
    while end is None or offset < end:
      chunk = f.read(_READ_BYTES)
      if not chunk:
        if parts:
          yield offset, b"".join(parts)
        return
      i, j = 0, chunk.find(b"\n")
      while j >= 0:
        line = chunk[i:j + 1]
        if parts:
          line = b"".join([*parts, line])
          parts = []
        yield offset, line
        offset += len(line)
        if end is not None and offset >= end:
          return
        i, j = j + 1, chunk.find(b"\n", j + 1)
      if i < len(chunk):
        parts.append(chunk[i:] if i else chunk)


def _opened(path: str):
  try:
    return open_binary(path)
  except OSError as e:
    raise UserError(f"cannot read data.source file {path}: {e.strerror}; check its "
                    "permissions") from None


def _whole_document(path: str) -> str:
  with _opened(path) as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"data.source file {path} is not valid UTF-8 (bad byte "
                    f"0x{raw[e.start]:02x} at byte offset {e.start}); convert it "
                    "to UTF-8, e.g. with iconv") from None
  if not text.strip():
    raise UserError(f"data.source file {path} is empty or whitespace only; "
                    "point data.source at a file with training text")
  return text


class _Where:
  """Formats as PATH:LINE, counting the newlines before `offset` only when an error
  message is formatted."""

  def __init__(self, path: str, offset: int):
    self.path, self.offset = path, offset

  def __format__(self, spec: str) -> str:
    with _opened(self.path) as f:
      n, left = 0, self.offset
      while left > 0:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
          break
        n += chunk.count(b"\n")
        left -= len(chunk)
    return format(f"{self.path}:{n + 1}", spec)


def _check_file(path: str, scheme: str) -> None:
  expanded = os.path.expanduser(path)
  resolved = os.path.abspath(expanded)
  shown = path if path == resolved else f"{path} (= {resolved})"
  if not os.path.exists(expanded):
    raise UserError(f"data.source file {shown} does not exist; fix the path in "
                    "data.source (relative paths start at the current directory)")
  if os.path.isdir(expanded):
    raise UserError(f"data.source path {shown} is a directory; name the files in it, "
                    f"e.g. {scheme}:{os.path.join(path, '*')}")
