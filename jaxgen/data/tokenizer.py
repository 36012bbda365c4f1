"""Tokenizers: text <-> int32 ids, saved as JSON alongside checkpoints.

Every tokenizer file is a JSON object with a "kind" key; `load_tokenizer`
dispatches on it, so a run restored from its workdir decodes with exactly the
vocabulary it was trained with. New kinds (bytes, SentencePiece) register a
loader in `_LOADERS`.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Protocol

import numpy as np

from jaxgen.errors import UserError


class Tokenizer(Protocol):
  """What training and sampling need from any tokenizer."""

  @property
  def vocab_size(self) -> int:
    ...

  def encode(self, text: str) -> np.ndarray:
    ...

  def decode(self, ids: Any) -> str:
    ...

  def save(self, path: str | os.PathLike[str]) -> None:
    ...


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
  """Loads a tokenizer saved by any tokenizer's `save`, dispatching on "kind"."""
  spec = _read_spec(path)
  kind = spec.get("kind")
  loader = _LOADERS.get(kind) if isinstance(kind, str) else None
  if loader is None:
    raise UserError(
        f"tokenizer file {os.fspath(path)} has unknown kind {kind!r} (known: "
        f"{', '.join(sorted(_LOADERS))}); it was written by another program "
        "or a newer jaxgen")
  return loader(spec, path)


class CharTokenizer:
  """Character-level tokenizer; the vocabulary is the corpus's sorted chars.

  Ids follow nanoGPT: id i is the i-th character in code point order.
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
  def load(cls, path: str | os.PathLike[str]) -> CharTokenizer:
    """Loads a file written by `save`."""
    tokenizer = load_tokenizer(path)
    if not isinstance(tokenizer, cls):
      raise UserError(f"tokenizer file {os.fspath(path)} holds a "
                      f"{type(tokenizer).__name__}, not a character tokenizer")
    return tokenizer

  @property
  def vocab_size(self) -> int:
    return len(self._chars)

  @property
  def chars(self) -> str:
    """The vocabulary, in id order."""
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
          f"tokenizer's {self.vocab_size}-character vocabulary, which was built "
          "from the training corpus; remove it or retrain on text that has it")
    return ids.astype(np.int32)

  def decode(self, ids: Any) -> str:
    """Maps ids (any int array-like) back to text."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
    if bad.size:
      raise ValueError(f"id {int(ids[bad[0]])} at position {int(bad[0])} is "
                       f"outside the vocabulary [0, {self.vocab_size})")
    return self._code_points[ids].tobytes().decode("utf-32-le", "surrogatepass")

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes {"kind": "char", "chars": ...} atomically: never a partial file."""
    _write_json_atomically(path, {"kind": self.kind, "chars": self._chars})

  def __eq__(self, other: object) -> bool:
    return isinstance(other, CharTokenizer) and other._chars == self._chars

  def __hash__(self) -> int:
    return hash((self.kind, self._chars))

  def __repr__(self) -> str:
    return f"CharTokenizer(vocab_size={self.vocab_size})"


def _load_char(spec: dict[str, Any], path: str | os.PathLike[str]) -> CharTokenizer:
  chars = spec.get("chars")
  if (not isinstance(chars, str) or not chars or len(set(chars)) != len(chars)
      or list(chars) != sorted(chars)):
    raise UserError(f"tokenizer file {os.fspath(path)} is corrupt: \"chars\" "
                    "must be a non-empty string of distinct sorted characters")
  return CharTokenizer(chars)


_LOADERS: dict[str, Callable[[dict[str, Any], Any], Tokenizer]] = {
    CharTokenizer.kind: _load_char,
}


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


def _write_json_atomically(path: str | os.PathLike[str], obj: Any) -> None:
  # A temp file in the same directory makes os.replace a same-filesystem rename,
  # so a crash leaves either the old file or the new one, never a partial one.
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                             prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(obj, f, ensure_ascii=False)
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
