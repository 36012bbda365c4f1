"""`jaxgen data prepare --out=DIR`: tokenize a source once into a token store.

The source is cut into units (data/readers.py: about --unit_mb of input each, the
same cut on every host), and worker processes tokenize whole units with the
tokenizer library's batch call, each unit into its own shard files
(data/store.py's layout). A unit's files are written under a temporary name and
renamed into place, its summary (with checksums) last: a prepare killed at any
point and run again keeps the finished units, redoes the others, and ends with the
same bytes. With several hosts (--num_hosts, --host_index; a SLURM array's or an
Indexed Job's index by default) host h tokenizes units h, h + H, ...; then
`--finalize` (one process) checks every unit, decides the train/validation split
by today's rules (data/sources.py, data/pairs.py) and writes the split files and,
last, manifest.json. One host does both in one command.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import queue
import shutil
import sys
import time
from typing import Any

import numpy as np

from jaxgen import messages
from jaxgen.data import readers, splits, store as store_lib
from jaxgen.errors import UserError
from jaxgen.messages import count

DEFAULT_UNIT_MB = 64
# A batch call takes this many records, or fewer making this many characters: its
# arrays (a few bytes a character) stay a few tens of MB whatever the documents' sizes.
_BATCH_RECORDS = 1024
_BATCH_CHARS = 4 << 20
_DELAY_S = float(os.environ.get("JAXGEN_PREPARE_DELAY_S", 0))


def host_from_env(num_hosts: int | None, host_index: int | None) -> tuple[int, int]:
  """(H, h): the flags, else a SLURM array's task, else an Indexed Job's index."""
  env = os.environ
  if host_index is None and "SLURM_ARRAY_TASK_ID" in env:
    host_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    num_hosts = num_hosts or int(env.get("SLURM_ARRAY_TASK_COUNT", 1))
  elif host_index is None and "JOB_COMPLETION_INDEX" in env:
    host_index = int(env["JOB_COMPLETION_INDEX"])
  num_hosts, host_index = num_hosts or 1, host_index or 0
  if not 0 <= host_index < num_hosts:
    raise UserError(f"--host_index={host_index} is outside [0, --num_hosts={num_hosts})")
  return num_hosts, host_index


def prepare(cfg, out: str, *, workers: int = 0, num_hosts: int = 1, host_index: int = 0,
            finalize: bool = False, unit_mb: float = DEFAULT_UNIT_MB,
            vocab_size: int | None = None, command: str = "", as_json: bool = False) -> dict:
  """Builds (this host's share of) the store; returns the summary it prints."""
  d = cfg.data
  if d.get("mixture", ""):
    raise UserError("data prepare --out tokenizes one source; a mixture's components each "
                    "get their own store: run it once per component with "
                    "--config.data.source=SOURCE --config.data.mixture= --out=DIR")
  directory = pathlib.Path(os.path.expanduser(out))
  unit_bytes = max(1, int(unit_mb * (1 << 20)))
  task = readers.task_of(d)
  started = time.perf_counter()
  _claim(directory, d, command, unit_bytes)
  units = readers.plan_units(d, unit_bytes)
  if not units:
    raise UserError(f"data.source {d.source!r} holds nothing to prepare")
  done_before = (directory / "manifest.json").is_file()
  tokenizer = _tokenizer(cfg, directory, units, workers, num_hosts, vocab_size)
  mine = [] if finalize else [u for u in units if u.index % num_hosts == host_index]
  pending = [u for u in mine if not _unit_done(directory, u)]
  totals = _run_units(d.to_dict(), pending, directory, tokenizer.spec(), task, workers,
                      as_json, tokenizer.vocab_size)
  summary = {"store": str(directory), "units": len(units), "units_prepared": len(pending),
             "units_kept": len(mine) - len(pending), **totals}
  if num_hosts == 1 or finalize:
    if not done_before or pending:
      _finalize(cfg, directory, units, tokenizer, task, command, {u.index for u in pending})
    manifest = json.loads((directory / "manifest.json").read_text())
    summary["splits"] = manifest["splits"]
  seconds = time.perf_counter() - started
  summary.update(seconds=round(seconds, 3),
                 tokens_per_s=round(totals["tokens"] / seconds, 1) if seconds else 0.0)
  if as_json:
    print(json.dumps(summary), flush=True)
  else:
    tail = (f"; store complete: {_splits_line(summary['splits'], task)}" if "splits" in summary
            else f"; this host's units are done: run `{command or 'jaxgen data prepare ...'}"
                 " --finalize` once every host has finished")
    print(f"jaxgen: prepared {count(len(pending), 'unit')} of {len(units)} "
          f"({summary['units_kept']} kept from before): {count(totals['documents'], 'record')}, "
          f"{count(totals['tokens'], 'token')} in {seconds:.1f} s "
          f"({summary['tokens_per_s']:,.0f} tokens/s){tail}", flush=True)
  return summary


def _splits_line(splits: dict, task: str) -> str:
  noun = "pair" if task == "seq2seq" else "document"
  return ", ".join(f"{name} {count(s['records'], noun)} / {count(s['tokens'], 'token')}"
                   for name, s in splits.items())


def _claim(directory: pathlib.Path, d, command: str, unit_bytes: int) -> None:
  """Marks DIR as this source's store, or refuses a DIR that holds another one."""
  ident = {"source": d.source, "data": _data_keys(d), "unit_bytes": unit_bytes}
  path = directory / "prepare.json"
  if directory.exists() and not directory.is_dir():
    raise UserError(f"--out={directory} is a file; choose a directory for the store")
  if path.is_file():
    saved = json.loads(path.read_text())
    if saved.get("identity") != ident:
      raise UserError(f"--out={directory} holds the store of another source or settings "
                      f"(made by `{saved.get('command')}`); choose another --out, or delete "
                      "it to rebuild")
    return
  if directory.is_dir() and any(directory.iterdir()):
    raise UserError(f"--out={directory} is not empty and holds no token store; choose a "
                    "new or empty directory (nothing is overwritten)")
  (directory / "shards").mkdir(parents=True, exist_ok=True)
  _write_json(path, {"command": command, "identity": ident})


def _data_keys(d) -> dict:
  keys = ("tokenizer", "text_key", "text_lines", "val_fraction", "doc_split", "pair_split",
          "source_key", "target_key", "train_split", "eval_split")
  return {k: d.get(k) for k in keys}


def _tokenizer(cfg, directory: pathlib.Path, units, workers: int, num_hosts: int,
               vocab_size: int | None):
  """The config's tokenizer, saved as DIR/tokenizer.json (or the one saved there)."""
  from jaxgen.data import tokenizer as tok
  saved = directory / "tokenizer.json"
  if saved.is_file():
    return tok.load_tokenizer(saved)
  d = cfg.data
  if d.tokenizer == "char":
    if num_hosts > 1:
      raise UserError("data.tokenizer='char' takes its vocabulary from the whole corpus, "
                      "which one host of several cannot see; prepare on one host, or use "
                      "'byte', 'sentencepiece' or 'hf'")
    chars = set()
    for part in _map(_unit_chars, [(d.to_dict(), u) for u in units], workers):
      chars |= part
    tokenizer = tok.CharTokenizer("".join(sorted(chars)))
  elif d.tokenizer == "sentencepiece" and d.tokenizer_path and not os.path.exists(
      os.path.expanduser(d.tokenizer_path)):
    if not vocab_size:
      raise UserError(f"data.tokenizer_path={d.tokenizer_path} does not exist yet; give "
                      "--vocab_size=N to train it here from the train split first")
    import ml_collections
    from jaxgen.commands import tokenizer_train
    messages.hint(f"training a SentencePiece model of {vocab_size:,} pieces into "
                  f"{d.tokenizer_path} from the train split first")
    whole = ml_collections.ConfigDict(cfg.to_dict())
    whole.data.max_in_memory_mb = 0  # SentencePiece trains in memory, on the train split
    tokenizer_train(whole, vocab_size)
    tokenizer = tok.build_tokenizer(d, lambda: ())
  else:
    tokenizer = tok.build_tokenizer(d, lambda: ())
  tokenizer.save(saved)
  return tokenizer


# Units.


def _unit_name(index: int) -> str:
  return f"{index:05d}"


def _unit_done(directory: pathlib.Path, unit) -> bool:
  marker = directory / "shards" / f"{_unit_name(unit.index)}.json"
  if not marker.is_file():
    return False
  try:
    summary = json.loads(marker.read_text())
  except ValueError:
    return False
  return summary.get("unit") == unit.to_json() and all(
      (directory / name).is_file() and (directory / name).stat().st_size == e["bytes"]
      for name, e in summary["files"].items())


def _map(fn, args: list, workers: int, here: bool = False):
  """fn over args in worker processes (in order), or here for one worker or one item.

  here: this process is one of the `workers` too, taking items from the end while the
  others take them from the front, and results come as they are done. A worker
  process starts in about 0.4 s (a fresh interpreter importing numpy and jaxgen),
  which this one, idle otherwise, spends on items: on a small input, all of them."""
  workers = workers or os.cpu_count() or 1
  if workers == 1 or len(args) <= 1:
    yield from map(fn, args)
    return
  import multiprocessing  # spawn: forking a process that holds JAX's threads is unsafe
  ctx = multiprocessing.get_context("spawn")
  children = min(workers - here, len(args) - here)
  with ctx.Pool(children, initializer=_worker_init,
                initargs=(max(1, (os.cpu_count() or 1) // workers),)) as pool:
    if not here:
      yield from pool.imap(fn, args)
      return
    todo, done = collections.deque(args), queue.SimpleQueue()
    started = in_flight = 0
    # Items go to the children once they have started: one queued for a child still
    # starting would keep this process waiting for it at the end.
    for _ in range(children):
      pool.apply_async(os.getpid, callback=lambda _: done.put((_STARTED, None)))
    while todo or in_flight:
      while todo and in_flight < 2 * started:  # one queued behind each child's current
        pool.apply_async(fn, (todo.popleft(),), callback=lambda r: done.put((r, None)),
                         error_callback=lambda e: done.put((None, e)))
        in_flight += 1
      if todo:
        yield fn(todo.pop())
      while True:
        try:
          result, error = done.get(block=not todo and in_flight > 0)
        except queue.Empty:
          break
        if error is not None:
          raise error
        if result is _STARTED:
          started = min(started + 1, children)
          continue
        in_flight -= 1
        yield result


_STARTED = object()


def _worker_init(threads: int) -> None:
  os.environ["RAYON_NUM_THREADS"] = str(threads)  # the tokenizers library's thread pool
  os.environ["TOKENIZERS_PARALLELISM"] = "true"


def _unit_chars(args) -> set:
  data, unit = args
  chars = set()
  for record in readers.read_unit(_cfg(data), unit):
    for text in (record if isinstance(record, tuple) else (record,)):
      chars.update(text)
  return chars


def _cfg(data: dict):
  import ml_collections
  return ml_collections.ConfigDict(data)


def _run_units(data: dict, units, directory, spec, task, workers, as_json, vocab_size) -> dict:
  totals = {"documents": 0, "tokens": 0, "characters": 0, "bytes": 0}
  if not units:
    return totals
  total_bytes = sum(_unit_bytes(u) for u in units)
  bar = _Progress(total_bytes, quiet=as_json)
  args = [(data, u, str(directory), spec, task, vocab_size) for u in units]
  try:
    # SentencePiece's and HF's batch calls run on threads, sized per worker process by
    # _worker_init, which this process has not; the others tokenize on this thread.
    here = spec["kind"] in ("byte", "char")
    for result in _map(_tokenize_unit, args, workers, here=here):
      for k in totals:
        totals[k] += result[k]
      bar.update(result)
  finally:
    bar.close()
  return totals


def _unit_bytes(unit) -> int:
  if unit.kind != "files":
    return 0
  total = 0
  for path, start, end in unit.ranges:
    total += (os.path.getsize(os.path.expanduser(path)) if end is None else end) - start
  return total


class _Progress:
  """A bar (units, documents, tokens, MB/s, ETA) on a terminal; plain lines otherwise."""

  def __init__(self, total_bytes: int, quiet: bool):
    self.quiet, self.total = quiet, total_bytes
    self.start = self.last = time.perf_counter()
    self.docs = self.tokens = self.bytes = 0
    self.tty = sys.stderr.isatty()

  def update(self, result: dict) -> None:
    self.docs += result["documents"]
    self.tokens += result["tokens"]
    self.bytes += result["bytes"]
    now = time.perf_counter()
    if self.quiet or (not self.tty and now - self.last < 10):
      return
    self.last = now
    rate = self.bytes / max(now - self.start, 1e-9)
    eta = (self.total - self.bytes) / rate if rate and self.total else 0
    line = (f"jaxgen: prepare: {self.docs:,} records, {self.tokens:,} tokens, "
            f"{self.bytes / 2**20:,.0f}/{self.total / 2**20:,.0f} MB, {rate / 2**20:.1f} MB/s, "
            f"ETA {eta:.0f} s")
    print(("\r" + line + "\033[K") if self.tty else line, end="" if self.tty else "\n",
          file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.tty and not self.quiet and self.docs:
      print(file=sys.stderr, flush=True)


def _tokenize_unit(args) -> dict:
  """Tokenizes one unit into its shard files (in a worker process)."""
  data, unit, directory, spec, task, vocab_size = args
  from jaxgen.data.tokenizer import tokenizer_from_spec
  d = _cfg(data)
  tokenizer = tokenizer_from_spec(spec)
  directory = pathlib.Path(directory)
  name = _unit_name(unit.index)
  tmp = directory / "shards" / f".tmp-{name}"
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  features = store_lib.FEATURES[task]
  dtype = np.dtype(store_lib.dtype_for(vocab_size))
  sinks = {f: _Sink(tmp / f"{name}.{f}.bin") for f in features}
  lengths = {f: [] for f in features}  # an int64 array per batch
  keys, chars = [], 0
  try:
    for batch in _batches(readers.read_unit(d, unit)):
      if _DELAY_S:  # tests slow a prepare down to kill it part-way
        time.sleep(_DELAY_S)
      if task == "seq2seq":
        for feature, texts in zip(features, ([list(c) for c in zip(*batch)])):
          ids = _encode_batch(tokenizer, texts)
          sinks[feature].write(np.concatenate(ids, dtype=dtype, casting="unsafe"))
          lengths[feature].append(np.fromiter(map(len, ids), np.int64, len(ids)))
        keys.append(np.asarray([splits.pair_keys(*r) for r in batch], np.uint64))
        chars += sum(len(s) + len(t) for s, t in batch)
      else:
        ids, n, hashes = _documents(tokenizer, batch, dtype)
        sinks["tokens"].write(ids)
        lengths["tokens"].append(n)
        text_lengths = np.fromiter(map(len, batch), np.int64, len(batch))
        keys.append(np.stack([hashes, text_lengths.astype(np.uint64)], 1))
        chars += int(text_lengths.sum())
  finally:
    for f in sinks.values():
      f.close()
  for feature in features:
    offsets = np.concatenate([[0], np.cumsum(_joined(lengths[feature]), dtype=np.int64)])
    np.save(tmp / f"{name}.{feature}.idx.npy", offsets.astype(np.int64))
  width = 3 if task == "seq2seq" else 2
  np.save(tmp / f"{name}.keys.npy", _joined(keys).astype(np.uint64).reshape(-1, width))
  hashed = {f"shards/{sink.path.name}": sink.entry() for sink in sinks.values()}
  files = {}
  for path in sorted(tmp.iterdir()):
    entry = f"shards/{path.name}"
    files[entry] = hashed.get(entry) or store_lib.file_entry(path)
  for path in sorted(tmp.iterdir()):
    os.replace(path, directory / "shards" / path.name)
  n_records = sum(len(k) for k in keys)
  n_tokens = int(sum(n.sum() for v in lengths.values() for n in v))
  summary = {"unit": unit.to_json(), "records": n_records, "tokens": n_tokens,
             "characters": chars, "files": files}
  _write_json(directory / "shards" / f"{name}.json", summary)
  tmp.rmdir()
  return {"documents": n_records, "tokens": n_tokens, "characters": chars,
          "bytes": _unit_bytes(unit)}


def _batches(records):
  """Lists of up to _BATCH_RECORDS records or about _BATCH_CHARS characters."""
  batch, chars = [], 0
  for record in records:
    batch.append(record)
    chars += len(record[0]) + len(record[1]) if isinstance(record, tuple) else len(record)
    if len(batch) == _BATCH_RECORDS or chars >= _BATCH_CHARS:
      yield batch
      batch, chars = [], 0
  if batch:
    yield batch


class _Sink:
  """A shard file written a batch at a time, its checksum taken from the bytes as they
  are written: read back, a shard would be hashed a second time."""

  def __init__(self, path: pathlib.Path):
    self.path, self.file, self.sha = path, open(path, "wb"), hashlib.sha256()

  def write(self, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    self.sha.update(array)
    self.file.write(array)

  def close(self) -> None:
    self.file.close()

  def entry(self) -> dict:
    return {"bytes": self.path.stat().st_size, "sha256": self.sha.hexdigest()}


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
  return np.concatenate(arrays) if arrays else np.zeros(0, np.int64)


def _documents(tokenizer, texts: list[str], dtype) -> tuple:
  """(ids, lengths, hashes) of a batch of documents: their ids in one array with an EOS
  after each document, each one's number of ids, and splits.hash64 of each text."""
  from jaxgen.data.tokenizer import ByteTokenizer
  if isinstance(tokenizer, ByteTokenizer):
    # The tokenizer's bytes are the hash's too: one encoding instead of two. Where
    # encoding refuses a text (a lone surrogate), so does `encode`.
    data = [tokenizer.utf8(t) for t in texts]
    out = _buffer(sum(map(len, data)) + len(data), dtype)
    ids, lengths = tokenizer.encode_utf8(data, dtype, eos=True, out=out)
    return ids, lengths, splits.hash64_utf8(data)
  encoded = _encode_batch(tokenizer, texts)
  eos = np.array([tokenizer.eos_id])
  ids = np.concatenate([a for x in encoded for a in (x, eos)], dtype=dtype, casting="unsafe")
  lengths = np.fromiter(map(len, encoded), np.int64, len(encoded)) + 1
  hashes = splits.hash64_utf8([t.encode("utf-8", "surrogatepass") for t in texts])
  return ids, lengths, hashes


_BUFFERS: dict = {}  # dtype -> this process's array for a batch's ids
_BUFFER_MAX = 16 << 20  # entries; a larger batch (a huge document) gets an array of its own


def _buffer(n: int, dtype) -> np.ndarray:
  """At least n entries of dtype, the same memory batch after batch: a new array per
  batch is faulted in page by page, which cost the byte tokenizer's prepare about a
  fifth of its time on this project's (virtual) machine."""
  dtype = np.dtype(dtype)
  if n > _BUFFER_MAX:
    return np.empty(n, dtype)
  if len(_BUFFERS.get(dtype, ())) < n:
    _BUFFERS[dtype] = np.empty(min(max(n, 2 * len(_BUFFERS.get(dtype, ()))), _BUFFER_MAX),
                               dtype)
  return _BUFFERS[dtype]


def _encode_batch(tokenizer, texts: list[str]) -> list[np.ndarray]:
  batch = getattr(tokenizer, "encode_batch", None)
  return batch(texts) if batch else [tokenizer.encode(t) for t in texts]


def _record_keys(record) -> tuple:
  if isinstance(record, tuple):  # what the hashed pair split groups and orders by
    return splits.pair_keys(*record)
  return splits.hash64(record), len(record)


# Finalize.


def _finalize(cfg, directory: pathlib.Path, units, tokenizer, task: str, command: str,
              written: set[int] = frozenset()) -> None:
  """Checks every unit, splits, writes manifest.json. The units `written` by this call
  are not read back: their workers took the checksums from the bytes they wrote, and a
  second pass, in this one process, took a quarter of a byte-tokenizer prepare's time.
  Units kept from before or written by other hosts are checked."""
  d = cfg.data
  prep = json.loads((directory / "prepare.json").read_text())
  command = prep.get("command") or command
  summaries = []
  for unit in units:
    marker = directory / "shards" / f"{_unit_name(unit.index)}.json"
    if not _unit_done(directory, unit):
      raise UserError(f"unit {unit.index} of {len(units)} ({unit.describe()}) is not "
                      f"prepared in {directory}; run the prepare of the host that owns it "
                      f"(host {unit.index} mod --num_hosts) before --finalize")
    summary = json.loads(marker.read_text())
    for name, entry in summary["files"].items() if unit.index not in written else ():
      if store_lib.sha256_file(directory / name) != entry["sha256"]:
        raise UserError(f"token store file {directory / name} fails its checksum; delete "
                        f"{marker} and run `{command}` again to redo that unit")
    summaries.append(summary)
  keys = [np.load(directory / "shards" / f"{_unit_name(u.index)}.keys.npy") for u in units]
  records = np.concatenate([np.stack([np.full(len(k), i), np.arange(len(k))], 1)
                            for i, k in enumerate(keys)]).astype(np.int64)
  shards = [{"name": _unit_name(u.index), "files": s["files"]} for u, s in zip(units, summaries)]
  if units[0].kind != "files":  # TFDS and bundled corpora bring their splits
    which = np.concatenate([np.full(len(k), u.split == "eval") for u, k in zip(units, keys)])
    splits = {"train": records[~which], "eval": records[which]}
  elif task == "seq2seq":
    splits = _pair_split(d, units, records, np.concatenate(keys))
  else:
    splits = _document_split(d, directory, units, records, np.concatenate(keys), tokenizer,
                             shards)
  files = {}
  (directory / "splits").mkdir(exist_ok=True)
  feature = store_lib.FEATURES[task]
  info, offsets = {}, {}
  for name, rows in splits.items():
    path = directory / "splits" / f"{name}.npy"
    _save_npy(path, rows)
    files[f"splits/{name}.npy"] = store_lib.file_entry(path)
    info[name] = {"records": int(len(rows)),
                  "tokens": _count_tokens(directory, shards, rows, feature, offsets)}
  files["tokenizer.json"] = store_lib.file_entry(directory / "tokenizer.json")
  from jaxgen import __version__
  manifest = {
      "format": store_lib.FORMAT, "version": store_lib.VERSION, "jaxgen_version": __version__,
      "task": task, "source": d.source, "command": command, "data": _data_keys(d),
      "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                    "sha256": files["tokenizer.json"]["sha256"]},
      "dtype": store_lib.dtype_for(tokenizer.vocab_size), "features": list(feature),
      "splits": info, "shards": shards, "files": files}
  _write_json(directory / "manifest.json", manifest)


def _count_tokens(directory, shards, rows: np.ndarray, features, offsets: dict) -> int:
  """The tokens of `rows`; `offsets` keeps each shard's offsets for the next split."""
  total = 0
  for feature in features:
    for shard in np.unique(rows[:, 0]).tolist() if len(rows) else []:
      name = f"{shards[shard]['name']}.{feature}.idx.npy"
      if name not in offsets:
        offsets[name] = np.load(directory / "shards" / name)
      index = rows[rows[:, 0] == shard, 1]
      total += int(np.sum(offsets[name][index + 1] - offsets[name][index]))
  return total


def _document_split(d, directory, units, records, keys, tokenizer, shards) -> dict:
  """data/sources.py's rules over the documents' (hash, length) keys."""
  lengths = keys[:, 1].astype(np.int64)
  head = splits.document_heads(d.source, d.val_fraction, d.get("doc_split", "tail"),
                               keys[:, 0], lengths)
  cut = np.flatnonzero(head > 0)
  train, eval_ = records.copy(), records.copy()
  if len(cut):  # cut documents: head and tail tokenized apart, into the "cut" shard
    cut_index = len(units)
    texts = _read_documents(d, units, records[cut])
    pieces = []
    for i, text in zip(cut, texts):
      pieces += [text[:head[i]], text[head[i]:]]
    shards.append(_write_cut_shard(directory, cut_index, pieces, tokenizer))
    shard_no = len(shards) - 1
    train[cut] = np.stack([np.full(len(cut), shard_no), 2 * np.arange(len(cut))], 1)
    eval_[cut] = train[cut] + [0, 1]
  return {"train": train[head != 0], "eval": eval_[head >= 0]}


def _read_documents(d, units, wanted: np.ndarray) -> list:
  """The records at (unit, index) `wanted`, read again from the source."""
  want = collections.defaultdict(set)
  for unit, index in wanted:
    want[int(unit)].add(int(index))
  found = {}
  for u, indices in want.items():
    for i, record in enumerate(readers.read_unit(d, units[u])):
      if i in indices:
        found[(u, i)] = record
      if i >= max(indices):
        break
  return [found[(int(u), int(i))] for u, i in wanted]


def _write_cut_shard(directory, index: int, texts: list[str], tokenizer) -> dict:
  name = _unit_name(index)
  ids = [np.append(tokenizer.encode(t), tokenizer.eos_id) for t in texts]
  dtype = np.dtype(store_lib.dtype_for(tokenizer.vocab_size))
  base = directory / "shards"
  (base / f"{name}.tokens.bin").write_bytes(np.concatenate(ids).astype(dtype).tobytes())
  _save_npy(base / f"{name}.tokens.idx.npy",
            np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64))
  files = {f"shards/{name}.{s}": store_lib.file_entry(base / f"{name}.{s}")
           for s in ("tokens.bin", "tokens.idx.npy")}
  return {"name": name, "files": files}


def _pair_split(d, units, records, keys) -> dict:
  """data/splits.py's pair rules over the pairs' hashes (texts read again only for the
  groups of several pairs)."""
  held = splits.pair_holdout(d, keys, lambda idx: _read_documents(d, units, records[idx]))
  return {"train": records[~held], "eval": records[held]}


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    np.save(f, np.asarray(array, np.int64))
  os.replace(tmp, path)


def _write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
  os.replace(tmp, path)
