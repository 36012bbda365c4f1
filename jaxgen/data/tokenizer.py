"""Tokenizers: text <-> int32 ids, saved as JSON alongside checkpoints.

Every tokenizer file is a JSON object with a "kind" key; `load_tokenizer`
dispatches on it, so a run restored from its workdir decodes with exactly the
vocabulary it was trained with. Kinds: "char" (the corpus's characters),
"byte" (UTF-8 bytes, ByT5's layout) and "sentencepiece" (a trained
SentencePiece model, stored inside the JSON). Each has pad, BOS and EOS ids
inside its vocabulary; `encode` never adds them (the data pipeline does) and
`decode` drops them.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import tempfile
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import sentencepiece as spm

from jaxgen.errors import UserError
from jaxgen.messages import hint

TOKENIZERS = ("byte", "char", "sentencepiece", "hf")  # the values of data.tokenizer

_TRAIN_COMMAND = "jaxgen tokenizer train --config=... --vocab_size=N"
# A character vocabulary larger than the byte one gets a hint: code, CJK or emoji text
# gives thousands of symbols, most of them rare, and their rows can outweigh the model.
_MANY_CHARS = 256


class Tokenizer(Protocol):
  """What training and sampling need from any tokenizer."""

  @property
  def vocab_size(self) -> int:
    """Number of ids, special ids included."""
    ...

  @property
  def pad_id(self) -> int:
    ...

  @property
  def bos_id(self) -> int:
    ...

  @property
  def eos_id(self) -> int:
    ...

  def encode(self, text: str) -> np.ndarray:
    """int32 1-D ids of `text`, without BOS/EOS."""
    ...

  def decode(self, ids: Any) -> str:
    """Text of `ids`; pad, BOS and EOS ids are dropped."""
    ...

  def spec(self) -> dict[str, Any]:
    ...

  def save(self, path: str | os.PathLike[str]) -> None:
    ...


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
  """Loads a tokenizer saved by any tokenizer's `save`, dispatching on "kind"."""
  return tokenizer_from_spec(_read_spec(path), path)


def prompt_start(tokenizer: Tokenizer, data_mode: str, has_text: bool) -> list[int]:
  """Ids to put before a prompt so generation starts as training documents did.

  Packed documents begin with bos, so every prompt gets one. Concatenated
  documents are only separated by eos: a prompt is used as is, and an empty
  one starts after an eos, where a new document would.
  """
  if data_mode == "pack":
    return [tokenizer.bos_id]
  return [] if has_text else [tokenizer.eos_id]


def tokenizer_from_spec(spec: dict[str, Any], path: str | os.PathLike[str] = "checkpoint"
                        ) -> Tokenizer:
  """The tokenizer a `spec()` describes; `path` names where it came from in errors."""
  kind = spec.get("kind")
  loader = _LOADERS.get(kind) if isinstance(kind, str) else None
  if loader is None:
    raise UserError(
        f"tokenizer file {os.fspath(path)} has unknown kind {kind!r} (known: "
        f"{', '.join(sorted(_LOADERS))}); it was written by another program "
        "or a newer jaxgen")
  return loader(spec, path)


def build_tokenizer(data_cfg: Any, train_texts: Callable[[], Iterable[str]]) -> Tokenizer:
  """The tokenizer `data_cfg.tokenizer` names.

  `train_texts` yields the training documents; it is only called for "char",
  whose vocabulary is the training corpus's characters. "sentencepiece" loads
  `data_cfg.tokenizer_path`: a .model file or a run's tokenizer.json.
  """
  name = data_cfg.tokenizer
  if str(getattr(data_cfg, "source", "")).startswith("store:"):
    return _store_tokenizer(data_cfg)
  if name == "char":
    tokenizer = CharTokenizer.from_texts(train_texts())
    if len(tokenizer.chars) > _MANY_CHARS:
      hint(f"data.tokenizer='char' found {len(tokenizer.chars):,} distinct symbols in the "
           f"corpus: a vocabulary of {tokenizer.vocab_size:,}, whose embedding rows can "
           f"outweigh a small model; data.tokenizer='byte' needs {ByteTokenizer().vocab_size}, "
           f"or train one (`{_TRAIN_COMMAND}`, then data.tokenizer='sentencepiece') or use "
           "a Hugging Face tokenizer (data.tokenizer='hf')")
    return tokenizer
  if name == "byte":
    return ByteTokenizer()
  if name == "sentencepiece":
    path = getattr(data_cfg, "tokenizer_path", "") or ""
    if not path:
      raise UserError(
          "data.tokenizer='sentencepiece' needs a trained model: run "
          f"`{_TRAIN_COMMAND}` (it writes data.tokenizer_path) or set "
          "data.tokenizer_path to a .model file or a run's tokenizer.json")
    path = os.path.expanduser(path)
    if not path.endswith(".json"):
      return SentencePieceTokenizer.load_model(path)
    tokenizer = load_tokenizer(path)
    if not isinstance(tokenizer, SentencePieceTokenizer):
      raise UserError(
          f"data.tokenizer_path={path} holds a {type(tokenizer).__name__}, not a "
          "SentencePiece tokenizer; point it to a .model file or set data.tokenizer "
          f"to {tokenizer.kind!r}")
    return tokenizer
  if name == "hf":  # a Hugging Face tokenizer.json in data.tokenizer_path
    from jaxgen.data.hf_tokenizer import HfTokenizer
    path = getattr(data_cfg, "tokenizer_path", "") or ""
    if not path:
      raise UserError("data.tokenizer='hf' needs data.tokenizer_path: a directory with a "
                      "Hugging Face tokenizer.json")
    return HfTokenizer.from_dir(path)
  raise UserError(f"data.tokenizer={name!r} is not a tokenizer; choose one of "
                  f"{', '.join(repr(t) for t in TOKENIZERS)}")


def _store_tokenizer(data_cfg: Any) -> Tokenizer:
  """A token store's own tokenizer, if the config names the same one."""
  from jaxgen.data.store import open_store
  store = open_store(str(data_cfg.source).partition(":")[2])
  tokenizer = store.tokenizer()
  name = data_cfg.tokenizer
  path = getattr(data_cfg, "tokenizer_path", "") or ""
  same = name == tokenizer.kind
  if same and name in ("sentencepiece", "hf") and path and os.path.exists(
      os.path.expanduser(path)):
    same = build_tokenizer(_without_source(data_cfg), lambda: ()) == tokenizer
  if not same:
    raise UserError(f"data.source {data_cfg.source!r} was tokenized with {tokenizer!r}, but "
                    f"data.tokenizer={name!r}"
                    + (f" (data.tokenizer_path={path})" if path else "")
                    + f" names another; set data.tokenizer={tokenizer.kind!r} as the store "
                    "was made, or prepare a store with this tokenizer")
  return tokenizer


def _without_source(data_cfg: Any) -> Any:
  copy = data_cfg.copy_and_resolve_references() if hasattr(data_cfg, "copy_and_resolve_references") else dict(data_cfg)
  copy.source = "text:-" if hasattr(copy, "source") else None
  return copy


def train_sentencepiece(texts: Iterable[str], vocab_size: int,
                        path: str | os.PathLike[str], **kwargs: Any) -> SentencePieceTokenizer:
  """Trains a SentencePiece model (`SentencePieceTokenizer.train` kwargs) and writes it to `path`.

  Refuses to overwrite `path` (checked before training too, so a long training
  is not wasted); creates its parent directories.
  """
  path = os.path.expanduser(os.fspath(path))
  if os.path.lexists(path):
    raise UserError(_exists_message(path))
  tokenizer = SentencePieceTokenizer.train(texts, vocab_size, **kwargs)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tokenizer.save_model(path)
  return tokenizer


class CharTokenizer:
  """Character-level tokenizer; the vocabulary is the corpus's sorted chars.

  Ids follow nanoGPT: id i is the i-th character in code point order, for i < n
  (n = len(chars)). The special ids come after them: pad = n, BOS = n + 1,
  EOS = n + 2, so vocab_size = n + 3. The JSON file holds only the characters.
  """

  kind = "char"

  def __init__(self, chars: str):
    if not chars:
      raise UserError("a character tokenizer needs a non-empty vocabulary; "
                      "the training corpus is empty")
    if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
      raise ValueError("chars must be distinct and sorted by code point")
    self._chars = chars
    # Sorted code points let `encode` map a whole corpus with one searchsorted.
    self._code_points = _code_points(chars)

  @classmethod
  def from_text(cls, text: str) -> CharTokenizer:
    """Builds the vocabulary from every distinct character of `text`."""
    return cls("".join(sorted(set(text))))

  @classmethod
  def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
    """Builds the vocabulary from every distinct character of all `texts`."""
    chars: set[str] = set()
    for text in texts:
      chars.update(text)
    return cls("".join(sorted(chars)))

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> CharTokenizer:
    """Loads a file written by `save`."""
    tokenizer = load_tokenizer(path)
    if not isinstance(tokenizer, cls):
      raise UserError(f"tokenizer file {os.fspath(path)} holds a "
                      f"{type(tokenizer).__name__}, not a character tokenizer")
    return tokenizer

  @property
  def vocab_size(self) -> int:
    return len(self._chars) + 3

  @property
  def pad_id(self) -> int:
    return len(self._chars)

  @property
  def bos_id(self) -> int:
    return len(self._chars) + 1

  @property
  def eos_id(self) -> int:
    return len(self._chars) + 2

  @property
  def chars(self) -> str:
    """The characters, in id order (ids 0 .. len(chars) - 1)."""
    return self._chars

  def encode(self, text: str) -> np.ndarray:
    """Maps `text` to int32 ids; a character outside the vocabulary is an error."""
    code_points = _code_points(text)
    ids = np.searchsorted(self._code_points, code_points)
    ids = np.minimum(ids, len(self._code_points) - 1)
    unknown = np.flatnonzero(self._code_points[ids] != code_points)
    if unknown.size:
      position = int(unknown[0])
      raise UserError(
          f"character {text[position]!r} at position {position} is not in the "
          f"tokenizer's {len(self._chars)}-character vocabulary, which was built "
          "from the training corpus; remove it or retrain on text that has it")
    return ids.astype(np.int32)

  def decode(self, ids: Any) -> str:
    """Maps ids (any int array-like) back to text; special ids give ''."""
    ids = _checked_ids(ids, self.vocab_size)
    ids = ids[ids < len(self._chars)]
    return self._code_points[ids].tobytes().decode("utf-32-le", "surrogatepass")

  def spec(self) -> dict[str, Any]:
    """{"kind": "char", "chars": ...}: what `save` writes and checkpoints hold."""
    return {"kind": self.kind, "chars": self._chars}

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes `spec()` as JSON atomically: never a partial file."""
    _write_json_atomically(path, self.spec())

  def __eq__(self, other: object) -> bool:
    return isinstance(other, CharTokenizer) and other._chars == self._chars

  def __hash__(self) -> int:
    return hash((self.kind, self._chars))

  def __repr__(self) -> str:
    return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
  """UTF-8 bytes, laid out as ByT5: pad = 0, EOS = 1, BOS = 2, byte b = b + 3.

  Needs no training and encodes any text; vocab_size is 259.
  """

  kind = "byte"
  _OFFSET = 3

  @property
  def vocab_size(self) -> int:
    return 256 + self._OFFSET

  @property
  def pad_id(self) -> int:
    return 0

  @property
  def eos_id(self) -> int:
    return 1

  @property
  def bos_id(self) -> int:
    return 2

  def encode(self, text: str) -> np.ndarray:
    """int32 ids of `text`'s UTF-8 bytes."""
    data = _utf8(text)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + self._OFFSET

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    """`encode` of each text, converted as one buffer."""
    ids, lengths = self.encode_utf8([self.utf8(t) for t in texts])
    return np.split(ids, np.cumsum(lengths)[:-1]) if texts else []

  @staticmethod
  def utf8(text: str) -> bytes:
    """The bytes `encode` takes the ids of (a lone surrogate is refused, as there)."""
    return _utf8(text)

  def encode_utf8(self, data: list[bytes], dtype: Any = np.int32, eos: bool = False,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lengths): the ids of the texts `data` (from `utf8`) in one array of `dtype`,
    an EOS after each one if `eos`, and each text's number of ids (its EOS included).

    One copy and one addition for a whole batch: the per-text numpy calls of `encode`
    cost more than converting a typical document's bytes. `out` (of `dtype`, at least
    sum(lengths) long) takes the ids instead of a new array: a buffer reused batch after
    batch is not faulted in again, page by page, for each one."""
    lengths = np.fromiter(map(len, data), np.int64, len(data)) + eos
    n = int(lengths.sum())
    ids = np.empty(n, dtype) if out is None else out[:n]
    if n:
      sep = [np.zeros(1, np.uint8)] if eos else []
      np.concatenate([a for b in data for a in (np.frombuffer(b, np.uint8), *sep)], out=ids,
                     casting="safe")
      ids += self._OFFSET
    if eos:
      ids[np.cumsum(lengths) - 1] = self.eos_id
    return ids, lengths

  def decode(self, ids: Any) -> str:
    """Drops special ids; byte sequences that are not UTF-8 decode as U+FFFD."""
    ids = _checked_ids(ids, self.vocab_size)
    data = (ids[ids >= self._OFFSET] - self._OFFSET).astype(np.uint8).tobytes()
    return data.decode("utf-8", "replace")

  def spec(self) -> dict[str, Any]:
    return {"kind": self.kind}

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes {"kind": "byte"} atomically."""
    _write_json_atomically(path, self.spec())

  def __eq__(self, other: object) -> bool:
    return isinstance(other, ByteTokenizer)

  def __hash__(self) -> int:
    return hash(self.kind)

  def __repr__(self) -> str:
    return "ByteTokenizer()"


class SentencePieceTokenizer:
  """A SentencePiece model (unigram or BPE); trained ones have pad = 0, EOS = 1,
  BOS = 2, unk = 3, then 256 byte-fallback pieces, then the learned pieces.

  `save` stores the serialized model inside the JSON file, so a run's
  tokenizer.json restores it exactly; `save_model` writes a plain .model file.
  """

  kind = "sentencepiece"

  def __init__(self, model_proto: bytes, *, source: str = "the model"):
    """Loads a serialized ModelProto; `source` names it in error messages."""
    processor = spm.SentencePieceProcessor()
    try:
      processor.LoadFromSerializedProto(model_proto)
    except (RuntimeError, TypeError):
      # sentencepiece says e.g. "INTERNAL: ... ParseFromArray(...)" or
      # "unk is not defined." (an empty file); neither helps the user.
      raise UserError(
          f"{source} is not a SentencePiece model (it does not parse); point "
          f"data.tokenizer_path to a .model file written by `{_TRAIN_COMMAND}`") from None
    self._processor = processor
    self._model_proto = processor.serialized_model_proto()
    special = {"pad": processor.pad_id(), "bos": processor.bos_id(),
               "eos": processor.eos_id()}
    missing = [name for name, i in special.items() if i < 0]
    if missing or len(set(special.values())) != 3:
      names = missing or list(special)
      raise UserError(
          f"{source} has no distinct {'/'.join(names)} "
          f"{'piece' if len(names) == 1 else 'pieces'}, which "
          f"jaxgen needs; train a model with `{_TRAIN_COMMAND}`")
    self._pad_id, self._bos_id, self._eos_id = (
        special["pad"], special["bos"], special["eos"])

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int, *, model_type: str = "unigram",
            character_coverage: float = 1.0, max_sentence_length: int = 1 << 16,
            input_sentence_size: int = 0, seed: int = 0,
            num_threads: int = 16) -> SentencePieceTokenizer:
    """Trains offline, in memory, on `texts`; the same arguments give the same model.

    Documents are fed line by line (and long lines in chunks of at most
    `max_sentence_length` bytes), since SentencePiece skips longer sentences.
    The normalization is the identity and byte fallback is on, so
    decode(encode(text)) == text for any text. `input_sentence_size` > 0
    trains on that many sentences sampled with `seed`. The model depends on
    `num_threads` (work is split by thread), so it is a fixed argument, not the
    machine's core count; 16 is SentencePiece's default.
    """
    if model_type not in ("unigram", "bpe"):
      raise UserError(f"model_type={model_type!r} is not a SentencePiece model type "
                      "jaxgen trains; use 'unigram' or 'bpe'")
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size <= 0:
      raise UserError(f"--vocab_size={vocab_size} must be a positive integer")
    sentences = _training_sentences(texts, max(1, max_sentence_length // 4))
    first = next(sentences, None)
    if first is None:
      raise UserError("cannot train a SentencePiece model: the training corpus is empty")
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)  # only used when sampling sentences
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=_chain(first, sentences), model_writer=model,
          model_type=model_type, vocab_size=int(vocab_size),
          character_coverage=character_coverage,
          max_sentence_length=max_sentence_length,
          input_sentence_size=input_sentence_size,
          shuffle_input_sentence=True, num_threads=num_threads,
          byte_fallback=True,
          # Identity normalization, kept spaces and no dummy prefix make
          # decode(encode(text)) == text, which generated text relies on.
          normalization_rule_name="identity", remove_extra_whitespaces=False,
          add_dummy_prefix=False, allow_whitespace_only_pieces=True,
          pad_id=0, eos_id=1, bos_id=2, unk_id=3,
          minloglevel=2)  # warnings and errors only; errors also raise
    except RuntimeError as e:
      raise UserError(_training_error(str(e), int(vocab_size))) from None
    return cls(model.getvalue(), source="the trained model")

  @classmethod
  def load_model(cls, path: str | os.PathLike[str]) -> SentencePieceTokenizer:
    """Loads a SentencePiece .model file."""
    path = os.fspath(path)
    try:
      with open(path, "rb") as f:
        model_proto = f.read()
    except FileNotFoundError:
      raise UserError(f"no SentencePiece model at {path}; train one with "
                      f"`{_TRAIN_COMMAND}` or fix data.tokenizer_path") from None
    except OSError as e:
      raise UserError(f"cannot read SentencePiece model {path}: "
                      f"{e.strerror or e}") from None
    return cls(model_proto, source=f"SentencePiece model file {path}")

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def bos_id(self) -> int:
    return self._bos_id

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def unk_id(self) -> int:
    return self._processor.unk_id()

  @property
  def model_proto(self) -> bytes:
    """The serialized ModelProto (the bytes of a .model file)."""
    return self._model_proto

  def encode(self, text: str) -> np.ndarray:
    """int32 ids of `text`; unseen characters become byte pieces."""
    try:
      ids = self._processor.encode(text, out_type=int)
    except UnicodeEncodeError as e:
      raise UserError(f"text is not encodable as UTF-8 at position {e.start} "
                      f"({text[e.start]!r}); remove lone surrogates") from None
    return np.asarray(ids, dtype=np.int32).reshape(-1)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    """`encode` of each text in one call on RAYON_NUM_THREADS (or all) threads."""
    threads = int(os.environ.get("RAYON_NUM_THREADS", 0)) or -1
    try:
      batch = self._processor.encode(texts, out_type=int, num_threads=threads)
    except UnicodeEncodeError:
      return [self.encode(t) for t in texts]  # names the text that fails
    return [np.asarray(ids, dtype=np.int32).reshape(-1) for ids in batch]

  def decode(self, ids: Any) -> str:
    """Drops pad, BOS and EOS ids and detokenizes the rest."""
    ids = _checked_ids(ids, self.vocab_size)
    keep = (ids != self._pad_id) & (ids != self._bos_id) & (ids != self._eos_id)
    return self._processor.decode(ids[keep].tolist())

  def spec(self) -> dict[str, Any]:
    """{"kind": "sentencepiece", "model": base64 ModelProto}."""
    return {"kind": self.kind, "model": base64.b64encode(self._model_proto).decode("ascii")}

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes `spec()` as JSON atomically."""
    _write_json_atomically(path, self.spec())

  def save_model(self, path: str | os.PathLike[str]) -> None:
    """Writes the .model file atomically; an existing `path` is a UserError."""
    _write_atomically(path, self._model_proto, overwrite=False)

  def __eq__(self, other: object) -> bool:
    return (isinstance(other, SentencePieceTokenizer)
            and other._model_proto == self._model_proto)

  def __hash__(self) -> int:
    return hash((self.kind, self._model_proto))

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


def _load_char(spec: dict[str, Any], path: str | os.PathLike[str]) -> CharTokenizer:
  chars = spec.get("chars")
  if (not isinstance(chars, str) or not chars or len(set(chars)) != len(chars)
      or list(chars) != sorted(chars)):
    raise UserError(f"tokenizer file {os.fspath(path)} is corrupt: \"chars\" "
                    "must be a non-empty string of distinct sorted characters")
  return CharTokenizer(chars)


def _load_byte(spec: dict[str, Any], path: str | os.PathLike[str]) -> ByteTokenizer:
  del spec, path  # nothing to configure
  return ByteTokenizer()


def _load_sentencepiece(spec: dict[str, Any],
                        path: str | os.PathLike[str]) -> SentencePieceTokenizer:
  model = spec.get("model")
  try:
    if not isinstance(model, str):
      raise ValueError
    model_proto = base64.b64decode(model, validate=True)
  except (ValueError, binascii.Error):
    raise UserError(f"tokenizer file {os.fspath(path)} is corrupt: \"model\" must "
                    "be a base64 SentencePiece model") from None
  return SentencePieceTokenizer(model_proto, source=f"the model in {os.fspath(path)}")


def _load_hf(spec: dict[str, Any], path: str | os.PathLike[str]) -> Tokenizer:
  from jaxgen.data.hf_tokenizer import load_spec  # lazily: needs the tokenizers library
  return load_spec(spec, path)


_LOADERS: dict[str, Callable[[dict[str, Any], Any], Tokenizer]] = {
    "hf": _load_hf,
    CharTokenizer.kind: _load_char,
    ByteTokenizer.kind: _load_byte,
    SentencePieceTokenizer.kind: _load_sentencepiece,
}

# sentencepiece's trainer_interface.cc messages, e.g. "INTERNAL: src/trainer_interface.cc(744)
# [...] Vocabulary size too high (434). Please set it to a value <= 433."
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\.(?: Please set it to a "
                       r"value <= (\d+)\.)?")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)\.")


def _training_error(message: str, vocab_size: int) -> str:
  if m := _TOO_HIGH.search(message):
    limit = f"at most {m.group(2)} pieces" if m.group(2) else "fewer pieces"
    return (f"--vocab_size={vocab_size} is too large: the training corpus supports "
            f"{limit}; lower --vocab_size")
  if m := _TOO_LOW.search(message):
    return (f"--vocab_size={vocab_size} is too small: the model needs at least "
            f"{m.group(2)} pieces (4 special, 256 byte-fallback and the corpus's "
            "characters); raise --vocab_size")
  # Other failures: drop the "INTERNAL: file.cc(N) [condition]" prefix when a
  # message follows it; the condition alone is better than nothing.
  message = re.sub(r"^[A-Z_]+: (\S+\.cc\(\d+\) )?", "", message.strip())
  message = re.sub(r"^\[.*?\]\s+(?=\S)", "", message)
  return "SentencePiece training failed: " + " ".join(message.split())


def _training_sentences(texts: Iterable[str], chunk_chars: int) -> Iterator[str]:
  # SentencePiece drops sentences over max_sentence_length bytes, and a corpus
  # can be one huge document (tiny Shakespeare is), so feed lines, split into
  # chunks of at most chunk_chars (4 UTF-8 bytes each at most).
  for text in texts:
    for line in text.splitlines(keepends=True):
      for start in range(0, len(line), chunk_chars):
        yield line[start:start + chunk_chars]


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
  yield first
  yield from rest


def _checked_ids(ids: Any, vocab_size: int) -> np.ndarray:
  ids = np.asarray(ids, dtype=np.int64).reshape(-1)
  bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
  if bad.size:
    raise ValueError(f"id {int(ids[bad[0]])} at position {int(bad[0])} is "
                     f"outside the vocabulary [0, {vocab_size})")
  return ids


def _utf8(text: str) -> bytes:
  try:
    return text.encode("utf-8")
  except UnicodeEncodeError as e:
    raise UserError(f"text is not encodable as UTF-8 at position {e.start} "
                    f"({text[e.start]!r}); remove lone surrogates") from None


def _code_points(text: str) -> np.ndarray:
  # surrogatepass: a str may hold lone surrogates (e.g. from surrogateescape).
  return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _read_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      spec = json.load(f)
  except FileNotFoundError:
    raise UserError(f"no tokenizer file at {path}; point to the tokenizer.json "
                    "of a run's workdir") from None
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError too
    raise UserError(f"cannot read tokenizer file {path}: {e}") from None
  if not isinstance(spec, dict):
    raise UserError(f"tokenizer file {path} is corrupt: expected a JSON object")
  return spec


def _exists_message(path: str) -> str:
  return f"{path} already exists; not overwriting it: delete it or choose another path"


def _write_json_atomically(path: str | os.PathLike[str], obj: Any) -> None:
  _write_atomically(path, json.dumps(obj, ensure_ascii=False).encode("utf-8"))


def _write_atomically(path: str | os.PathLike[str], data: bytes, *,
                      overwrite: bool = True) -> None:
  # A temp file in the same directory makes os.replace a same-filesystem rename,
  # so a crash leaves either the old file or the new one, never a partial one.
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                             prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
    if overwrite:
      os.replace(tmp, path)
    else:
      _link_new(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def _link_new(tmp: str, path: str) -> None:
  # A hard link fails if `path` exists, so no file can appear between a check
  # and the write; filesystems without hard links get check-then-rename.
  try:
    os.link(tmp, path)
  except FileExistsError:
    raise UserError(_exists_message(path)) from None
  except OSError:
    if os.path.lexists(path):
      raise UserError(_exists_message(path)) from None
    os.replace(tmp, path)
