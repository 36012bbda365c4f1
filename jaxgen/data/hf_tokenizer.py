"""A Hugging Face tokenizer (`tokenizer.json`) read through the `tokenizers` library.

`data.tokenizer='hf'` with `data.tokenizer_path=DIR` loads DIR/tokenizer.json
and the special tokens named in DIR's tokenizer_config.json (or, failing
that, the ids in config.json / generation_config.json). The spec stored with
every checkpoint holds the whole tokenizer.json, so a workdir restores
without DIR. A tokenizer without a pad token uses its eos as pad (HF's
usual choice); one without a bos uses its eos as bos.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from jaxgen.errors import UserError


class HfTokenizer:
  kind = "hf"

  def __init__(self, tokenizer_json: str, *, bos_id: int, eos_id: int, pad_id: int,
               source: str = "tokenizer.json"):
    from tokenizers import Tokenizer  # lazily: only hf tokenizers need it
    try:
      self._tok = Tokenizer.from_str(tokenizer_json)
    except Exception as e:  # tokenizers raises plain Exceptions on bad JSON
      raise UserError(f"{source} is not a tokenizer.json the tokenizers library reads "
                      f"({' '.join(str(e).split())[:200]})") from None
    self._json = tokenizer_json
    self._bos_id, self._eos_id, self._pad_id = bos_id, eos_id, pad_id
    for name, i in (("bos", bos_id), ("eos", eos_id), ("pad", pad_id)):
      if not 0 <= i < self.vocab_size:
        raise UserError(f"{source}: the {name} id {i} is outside the vocabulary of "
                        f"{self.vocab_size}")

  @classmethod
  def from_dir(cls, directory: str | os.PathLike[str]) -> HfTokenizer:
    """The tokenizer of a Hugging Face model directory (offline; no hub names)."""
    d = pathlib.Path(os.path.expanduser(os.fspath(directory)))
    path = d / "tokenizer.json"
    if not path.is_file():
      raise UserError(f"{d} has no tokenizer.json; jaxgen reads Hugging Face tokenizers "
                      "in the tokenizers library's format (save one with "
                      "tokenizer.save_pretrained)")
    text = path.read_text(encoding="utf-8")
    from tokenizers import Tokenizer
    try:
      tok = Tokenizer.from_str(text)
    except Exception as e:
      raise UserError(f"{path} cannot be read by the tokenizers library "
                      f"({' '.join(str(e).split())[:200]})") from None
    ids = _special_ids(d, tok)
    if ids["eos"] is None:
      raise UserError(f"{d}: no eos token in tokenizer_config.json or config.json; jaxgen "
                      "needs one to end documents")
    eos = ids["eos"]
    bos = eos if ids["bos"] is None else ids["bos"]
    pad = eos if ids["pad"] is None else ids["pad"]
    return cls(text, bos_id=bos, eos_id=eos, pad_id=pad, source=str(path))

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

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
  def tokenizer_json(self) -> str:
    return self._json

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text, add_special_tokens=False).ids,
                      np.int32).reshape(-1)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    """`encode` of each text, by the library's batch call (its threads: RAYON_NUM_THREADS)."""
    return [np.asarray(e.ids, np.int32).reshape(-1)
            for e in self._tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids: Any) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    keep = (ids != self._pad_id) & (ids != self._bos_id) & (ids != self._eos_id)
    return self._tok.decode(ids[keep].tolist(), skip_special_tokens=False)

  def spec(self) -> dict[str, Any]:
    return {"kind": self.kind, "tokenizer_json": self._json, "bos_id": self._bos_id,
            "eos_id": self._eos_id, "pad_id": self._pad_id}

  def save(self, path: str | os.PathLike[str]) -> None:
    from jaxgen.data.tokenizer import _write_json_atomically
    _write_json_atomically(path, self.spec())

  def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
    """tokenizer.json and tokenizer_config.json, as HF reads them."""
    d = pathlib.Path(directory)
    (d / "tokenizer.json").write_text(self._json, encoding="utf-8")
    token = self._tok.id_to_token
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": token(self._bos_id),
              "eos_token": token(self._eos_id), "pad_token": token(self._pad_id),
              "add_bos_token": False, "add_eos_token": False,
              "clean_up_tokenization_spaces": False}
    (d / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

  def __eq__(self, other: object) -> bool:
    return isinstance(other, HfTokenizer) and other.spec() == self.spec()

  def __hash__(self) -> int:
    return hash((self.kind, self._json))

  def __repr__(self) -> str:
    return f"HfTokenizer(vocab_size={self.vocab_size})"


def load_spec(spec: dict[str, Any], path: str | os.PathLike[str]) -> HfTokenizer:
  try:
    return HfTokenizer(spec["tokenizer_json"], bos_id=int(spec["bos_id"]),
                       eos_id=int(spec["eos_id"]), pad_id=int(spec["pad_id"]),
                       source=f"the tokenizer in {os.fspath(path)}")
  except (KeyError, TypeError, ValueError):
    raise UserError(f"tokenizer file {os.fspath(path)} is corrupt: an hf tokenizer needs "
                    "tokenizer_json, bos_id, eos_id and pad_id") from None


def _special_ids(d: pathlib.Path, tok) -> dict[str, int | None]:
  """bos/eos/pad ids: tokenizer_config.json's tokens first, then config files' ids."""
  ids: dict[str, int | None] = {"bos": None, "eos": None, "pad": None}
  config = _read_json(d / "tokenizer_config.json")
  for name in ids:
    token = config.get(f"{name}_token")
    if isinstance(token, dict):
      token = token.get("content")
    if isinstance(token, str):
      ids[name] = tok.token_to_id(token)
  for file in ("generation_config.json", "config.json"):
    extra = _read_json(d / file)
    for name in ids:
      value = extra.get(f"{name}_token_id")
      if isinstance(value, list) and value:
        value = value[0]
      if ids[name] is None and isinstance(value, int):
        ids[name] = value
  return ids


def _read_json(path: pathlib.Path) -> dict:
  if not path.is_file():
    return {}
  try:
    value = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {path}: {e}") from None
  return value if isinstance(value, dict) else {}
