"""Where training text comes from: `data.source` strings, read as documents.

  bundled:NAME         a corpus shipped with jaxgen (tiny_shakespeare), split as TFDS splits it
  text:PATH_OR_GLOB    each file is a document (each non-empty line, with data.text_lines)
  jsonl:PATH_OR_GLOB   one JSON object per line; its data.text_key field is the document
  tfds:NAME[:VERSION]  a TFDS data set, read lazily as array_record (prepared first if needed);
                       its data.text_key feature is the document (with data.source_key set,
                       data/pairs.py reads it as pairs through `tfds_records`)

`documents(data_cfg, "train" | "eval")` is a random-access sequence of str for the Grain
pipeline. TFDS data sets and bundled corpora keep their own splits (data.train_split,
data.eval_split). Local corpora hold out val_fraction of their characters:

- one document: its last val_fraction of the characters evaluate, as nanoGPT cuts
  tiny Shakespeare (the first int(n * (1 - val_fraction)) train);
- several, data.doc_split='hashed': whole documents taken in the order of a hash of
  their text (never their file's name or place), until the next would pass
  val_fraction of all characters; that one is cut there, its head training and its tail
  evaluating. Validation is val_fraction of the characters whatever the files' sizes
  (one document reduces to nanoGPT's cut), identical documents fall on the same side,
  and adding a document moves few others;
- several, data.doc_split='tail' (what jaxgen did before data.doc_split, and what a
  config without the key gets): the last ceil(val_fraction * n) documents, whatever
  their sizes.

A split whose validation holds more than twice val_fraction of the characters is
reported in one `jaxgen: warning:` line.
"""

from __future__ import annotations

import collections.abc
import difflib
import glob
import operator
import os
import socket
import urllib.parse
from typing import Any

import numpy as np

from jaxgen.data import bundled, splits
from jaxgen.errors import UserError
from jaxgen.messages import count

SOURCE_FORMS = ("bundled:NAME", "text:PATH_OR_GLOB", "jsonl:PATH_OR_GLOB", "tfds:NAME[:VERSION]",
                "tsv:PATH_OR_GLOB", "synthetic:TASK",  # these two: pairs (data/pairs.py)
                "store:DIR")  # a token store (data/store.py) of documents or pairs
SPLITS = ("train", "eval")
_PROBE_TIMEOUT_S = 5.0  # offline, a download fails this fast instead of after minutes
# Defaults of the optional data.* keys, for configs written before they existed.
DEFAULTS = {"train_split": "train", "eval_split": "validation", "text_key": "text",
            "text_lines": False, "tfds_data_dir": "", "tfds_manual_dir": "",
            "val_fraction": 0.1, "doc_split": "tail"}
DOC_SPLITS = ("hashed", "tail")  # the values of data.doc_split


def documents(data_cfg: Any, split: str) -> Documents:
  """The documents of `split` ("train" or "eval") of `data_cfg.source`, random access."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  scheme, rest = parse_source(data_cfg.source)
  if scheme == "store":
    from jaxgen.data import store
    return store.split_of(data_cfg, split)
  if scheme == "tfds":
    return _tfds_documents(data_cfg, split)
  if scheme == "bundled":
    return _bundled_documents(data_cfg, rest, split)
  return _local_splits(data_cfg, scheme, rest)[split]


def prepare(data_cfg: Any) -> dict[str, dict[str, int]]:
  """Readies the source (prepares TFDS, reads and checks local files); sizes per split."""
  scheme, rest = parse_source(data_cfg.source)
  if scheme == "store":
    from jaxgen.data import store
    splits = {split: store.split_of(data_cfg, split) for split in SPLITS}
    return {split: {"documents": len(docs), "tokens": len(docs.stream())}
            for split, docs in splits.items()}
  if scheme == "tfds":
    splits = {split: _tfds_documents(data_cfg, split) for split in SPLITS}
  elif scheme == "bundled":
    splits = {split: _bundled_documents(data_cfg, rest, split) for split in SPLITS}
  else:
    splits = _local_splits(data_cfg, scheme, rest)
  # Iterating reads every TFDS record: fine for the small data sets this is used with.
  return {split: {"documents": len(docs), "characters": sum(len(d) for d in docs)}
          for split, docs in splits.items()}


class Documents(collections.abc.Sequence):
  """One split's documents: a list of str, or TFDS records whose `text_key` is decoded on read.

  Picklable (Grain workers) and with a short repr (Grain checkpoints record it).
  `doc_split` is the data.doc_split rule the split was made by, or None where no
  value of data.doc_split would change it (TFDS, bundled, one document, no validation).
  """

  def __init__(self, items: collections.abc.Sequence, description: str,
               text_key: str | None = None, doc_split: str | None = None):
    self._items = items
    self._description = description
    self._text_key = text_key
    self.doc_split = doc_split

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    i, n = operator.index(index), len(self)
    if not -n <= i < n:
      raise IndexError(f"document {i} out of range for {count(n, 'document')}")
    item = self._items[i % n]
    if self._text_key is None:
      return item
    text = item[self._text_key]
    return text.decode("utf-8") if isinstance(text, bytes) else text  # TFDS Text: bytes

  def __repr__(self) -> str:
    return f"Documents({self._description}, documents={len(self)})"


def _opt(data_cfg: Any, key: str) -> Any:
  return data_cfg.get(key, DEFAULTS[key])


def parse_source(source: str) -> tuple[str, str]:
  scheme, sep, rest = str(source).partition(":")
  forms = dict(zip(("bundled", "text", "jsonl", "tfds", "tsv", "synthetic", "store"),
                   SOURCE_FORMS))
  if not sep or scheme not in forms:
    raise UserError(f"data.source {source!r} has no known scheme; use one of "
                    f"{', '.join(SOURCE_FORMS)} (e.g. text:data/input.txt)")
  if not rest:
    raise UserError(f"data.source {source!r} names nothing; use {forms[scheme]}")
  return scheme, rest


# Bundled corpora.


def _bundled_documents(data_cfg: Any, name: str, split: str) -> Documents:
  cfg_key = "train_split" if split == "train" else "eval_split"
  split_name = _opt(data_cfg, cfg_key)
  texts = bundled.split_texts(name)
  if split_name not in texts:
    raise UserError(f"data.source {data_cfg.source!r} has no split {split_name!r} "
                    f"(data.{cfg_key}); use one of: {', '.join(texts)}")
  return Documents([texts[split_name]], f"{data_cfg.source!r}, split={split_name!r}")


# Local files: text and jsonl.


def _local_splits(data_cfg: Any, scheme: str, pattern: str) -> dict[str, Documents]:
  source = data_cfg.source
  docs = []
  paths = _match_files(pattern, source, scheme)
  if reads_lazily(data_cfg, paths):
    from jaxgen.data import lazy_files  # pylint: disable=import-outside-toplevel
    return lazy_files.splits(data_cfg, paths)
  from jaxgen.data import readers  # pylint: disable=import-outside-toplevel  # imports this
  for path in paths:
    docs.extend(readers.file_records(data_cfg, path))
  rule, val_fraction = _opt(data_cfg, "doc_split"), _opt(data_cfg, "val_fraction")
  if rule not in DOC_SPLITS:
    raise UserError(f"data.doc_split={rule!r} is not a split; use one of "
                    f"{', '.join(map(repr, DOC_SPLITS))}")
  lengths = np.array([len(t) for t in docs], np.int64)
  hashed = rule == "hashed" and len(docs) > 1 and val_fraction > 0
  hashes = np.array([splits.hash64(t) for t in docs] if hashed else [0] * len(docs), np.uint64)
  train, eval_ = splits.apply_heads(
      docs, splits.document_heads(source, val_fraction, rule, hashes, lengths))
  depends_on = rule if len(docs) > 1 and val_fraction > 0 else None
  return {"train": Documents(train, f"{source!r}, split='train'", doc_split=depends_on),
          "eval": Documents(eval_, f"{source!r}, split='eval'", doc_split=depends_on)}


def _size(paths: list[str]) -> int:
  return sum(os.path.getsize(os.path.expanduser(p)) for p in paths
             if os.path.isfile(os.path.expanduser(p)))


def _too_large(data_cfg: Any, paths: list[str]) -> bool:
  limit = data_cfg.get("max_in_memory_mb", 0)
  return bool(limit) and _size(paths) > limit * 2**20


def reads_lazily(data_cfg: Any, paths: list[str]) -> bool:
  """Whether local files larger than data.max_in_memory_mb are read lazily: in pack mode,
  which reads one record at a time (data/lazy_files.py). In any other mode they are
  refused; smaller ones are read into memory (False)."""
  if not _too_large(data_cfg, paths):
    return False
  mode = data_cfg.get("mode", "windows")
  if mode == "pack":
    return True
  raise UserError(
    f"data.source {data_cfg.source!r} is {_size(paths) / 2**20:,.0f} MB, more than "
    f"data.max_in_memory_mb={data_cfg.max_in_memory_mb} that jaxgen reads into memory"
    f" for data.mode={mode!r} (data.mode='pack' reads it lazily)"
    + "; tokenize it once into a token store (`jaxgen data prepare --config=... "
    "--out=DIR`, then data.source=store:DIR), or raise data.max_in_memory_mb")


def _match_files(pattern: str, source: str, scheme: str) -> list[str]:
  """The files named by PATH_OR_GLOB, sorted by name; a literal path is taken as is."""
  expanded = os.path.expanduser(pattern)
  if os.path.exists(expanded) or not any(c in expanded for c in "*?["):
    return [pattern]  # a missing file or a directory is reported by the reader
  paths = sorted(glob.glob(expanded, recursive=True))
  if not paths:
    raise UserError(f"data.source {source!r} matches no file (looked from "
                    f"{os.getcwd()}); fix the pattern after {scheme}:")
  return paths


# TFDS.


def _tfds_documents(data_cfg: Any, split: str) -> Documents:
  key = _opt(data_cfg, "text_key")
  records, where = tfds_records(data_cfg, split, {"text_key": key})
  return Documents(records, f"{where}, text_key={key!r}", key)


def tfds_records(data_cfg: Any, split: str, keys: dict[str, str]) -> tuple[Any, str]:
  """The records of `split` ("train" or "eval": data.train_split or data.eval_split) of a
  tfds: data.source, prepared first if needed, and a short description of them.

  `keys` maps config keys to the text features the caller reads (documents:
  {"text_key": ...}; pairs: {"source_key": ..., "target_key": ...}); each must name
  one, or the error says which features there are.
  """
  source = data_cfg.source
  tfds = _import_tfds(source)
  builder = _tfds_builder(tfds, parse_source(source)[1], data_cfg)
  features = builder.info.features
  names = list(features.keys()) if hasattr(features, "keys") else []
  texts = [n for n in names if isinstance(features[n], tfds.features.Text)]
  for cfg_key, key in keys.items():
    if key not in names:
      raise UserError(f"data.source {source!r} has no feature {key!r} (features: "
                      f"{', '.join(names)}); set data.{cfg_key} to one of: "
                      f"{', '.join(texts) or '(none: this data set has no text feature)'}")
    if key not in texts:
      raise UserError(f"data.source {source!r}: feature {key!r} is "
                      f"{type(features[key]).__name__}, not text; set data.{cfg_key} to one "
                      f"of: {', '.join(texts) or '(none: this data set has no text feature)'}")
  cfg_key = "train_split" if split == "train" else "eval_split"
  tfds_split = _opt(data_cfg, cfg_key)
  try:
    # Checked up front: an empty slice makes as_data_source fail with a cryptic message.
    if builder.info.splits and builder.info.splits[tfds_split].num_examples == 0:
      raise UserError(f"data.source {source!r}: split {tfds_split!r} (data.{cfg_key}) has "
                      "no examples; choose another split or slice")
    records = builder.as_data_source(split=tfds_split)
  except NotImplementedError:  # prepared earlier by tfds.load: tfrecord, no random access
    fmt = builder.info.file_format
    raise UserError(
        f"data.source {source!r} is prepared in {builder.data_dir} as "
        f"{getattr(fmt, 'value', fmt)}, which has no random access; point "
        "data.tfds_data_dir at another directory (jaxgen prepares it there as array_record) "
        "or delete that one") from None
  except ValueError as e:  # unknown split name, or a slice that does not fit
    why = _first_line(e).split(". Should be one of")[0]  # the list follows anyway
    raise UserError(f"data.source {source!r}: {why}; set data.{cfg_key} (now "
                    f"{tfds_split!r}) to one of: {', '.join(builder.info.splits)}") from None
  if len(records) == 0:
    raise UserError(f"data.source {source!r}: split {tfds_split!r} (data.{cfg_key}) has no "
                    "examples; choose another split or slice")
  return records, f"{source!r}, split={tfds_split!r}"


def _tfds_builder(tfds: Any, spec: str, data_cfg: Any) -> Any:
  """The builder for NAME[:VERSION], prepared as array_record if it is not yet."""
  source = data_cfg.source
  data_dir = os.path.expanduser(_opt(data_cfg, "tfds_data_dir")) or None
  try:
    # try_gcs=False: never read gs://tfds-data; everything comes from data_dir.
    builder = tfds.builder(spec, data_dir=data_dir, try_gcs=False)
  except tfds.core.DatasetNotFoundError:
    name = spec.split(":")[0].split("/")[0]
    close = difflib.get_close_matches(name, tfds.list_builders(with_community_datasets=False))
    hint = (f"did you mean {' or '.join(close)}?" if close
            else "tfds.list_builders() lists the known ones")
    raise UserError(f"data.source {source!r}: TFDS has no data set {name!r}; {hint}") from None
  except (AssertionError, ValueError) as e:  # bad version or malformed name
    raise UserError(f"data.source {source!r}: {_first_line(e)}; use "
                    "tfds:NAME[/CONFIG][:VERSION] with a version TFDS has") from None
  if not builder.is_prepared():
    _prepare_tfds(tfds, builder, data_cfg)
  return builder


def _prepare_tfds(tfds: Any, builder: Any, data_cfg: Any) -> None:
  # Not tfds.data_source(..., data_dir=...): with a data_dir it prepares tfrecord files,
  # which it then cannot read; array_record is asked for here explicitly.
  source = data_cfg.source
  manual_dir = os.path.expanduser(_opt(data_cfg, "tfds_manual_dir")) or None
  if manual_dir and not os.path.isdir(manual_dir):
    raise UserError(f"data.tfds_manual_dir {manual_dir} is not a directory; point it at "
                    f"the folder holding the files for {source!r}")
  # A data set whose download jaxgen ships prepares from that copy: no network.
  manual_dir = manual_dir or bundled.manual_dir(builder.name)
  _check_downloads_reachable(builder, source, manual_dir)
  config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
  try:
    builder.download_and_prepare(file_format="array_record", download_config=config)
  except ImportError as e:  # most builders read their files through TensorFlow
    raise UserError(f"preparing data.source {source!r} needs {e.name or e}: pip install "
                    "'jaxgen[tfds]' (reading it once prepared does not)") from None
  except tfds.core.download.download_manager.NonMatchingChecksumError:
    where = f"data.tfds_manual_dir {manual_dir}" if manual_dir else "the download"
    raise UserError(f"a file in {where} is not the one {source!r} expects (wrong "
                    "checksum); put the original file in data.tfds_manual_dir") from None
  except (tfds.download.DownloadError, OSError) as e:  # offline: requests' ConnectionError
    raise UserError(f"preparing data.source {source!r} failed ({_first_line(e)}); "
                    "offline, put its downloads in data.tfds_manual_dir") from None


def _check_downloads_reachable(builder: Any, source: str, manual_dir: str | None) -> None:
  """Fails in seconds when a download is needed and its host cannot be reached.

  Offline, TFDS would otherwise spend minutes in urllib3 retries before
  failing. Only builders that register their download URLs (most do) are
  checked; files already in `manual_dir` need no download.
  """
  try:
    urls = list(builder.url_infos or {})
  except Exception:  # pylint: disable=broad-except  # no checksums registered
    return
  have = set(os.listdir(manual_dir)) if manual_dir and os.path.isdir(manual_dir) else set()
  needed = [u for u in urls if os.path.basename(urllib.parse.urlparse(u).path) not in have]
  for url in needed[:1]:
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
      socket.create_connection((parsed.hostname, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as e:
      files = ", ".join(sorted({os.path.basename(urllib.parse.urlparse(u).path)
                                for u in needed})) or "its downloads"
      raise UserError(
          f"preparing data.source {source!r} downloads from {parsed.hostname}, which cannot "
          f"be reached ({e.strerror or e}); offline, put {files} in data.tfds_manual_dir, "
          "or run `jaxgen data prepare` with data.tfds_data_dir=DIR on a machine with "
          "internet and copy DIR here") from None


def _import_tfds(source: str) -> Any:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f"data.source {source!r} needs tensorflow_datasets ({e}); pip "
                    "install 'jaxgen[tfds]'") from None
  return tfds


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  # tfds.builder wraps errors as 'Failed to construct dataset "x", builder_kwargs "...": why'.
  text = text.rsplit('": ', 1)[-1] if text.startswith("Failed to construct") else text
  return text.rstrip(".")  # the caller's "; what to do" follows
