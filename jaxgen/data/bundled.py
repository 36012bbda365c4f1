"""Corpora shipped inside the package: `bundled:NAME` trains with no network and no TensorFlow.

`tiny_shakespeare` is the exact file TFDS's `tiny_shakespeare` builder downloads
(char-rnn's input.txt, 1,115,394 characters); its SHA-256, the one TFDS
registers, is checked on every read. It is split as that builder splits it,
so `bundled:tiny_shakespeare` and `tfds:tiny_shakespeare` give the same
train, validation and test text. The same file is what TFDS prepares from
when no download is possible (`tfds_manual_dir`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pathlib

from jaxgen.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parent / "corpora"


@dataclasses.dataclass(frozen=True)
class Corpus:
  file: str  # under ROOT; named as the TFDS builder's download is
  sha256: str
  tfds_name: str  # the TFDS builder that downloads this same file


CORPORA = {
    "tiny_shakespeare": Corpus(
        file="tiny_shakespeare/input.txt", tfds_name="tiny_shakespeare",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}


def split_texts(name: str) -> dict[str, str]:
  """{"train", "validation", "test"} texts of corpus `name`: TFDS's 90/5/5 cut."""
  text = read(name)
  i = int(len(text) * 0.9)
  train, rest = text[:i], text[i:]
  j = int(len(rest) * 0.5)
  return {"train": train, "validation": rest[:j], "test": rest[j:]}


@functools.lru_cache(maxsize=None)
def read(name: str) -> str:
  """The corpus's text, after checking its bytes are the ones shipped."""
  corpus = _corpus(name)
  path = ROOT / corpus.file
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise UserError(f"the bundled corpus {name!r} is missing from this jaxgen install "
                    f"({path}: {e.strerror}); reinstall jaxgen") from None
  if hashlib.sha256(raw).hexdigest() != corpus.sha256:
    raise UserError(f"the bundled corpus file {path} has been altered (SHA-256 mismatch); "
                    "reinstall jaxgen")
  return raw.decode("utf-8")


def manual_dir(tfds_name: str) -> str | None:
  """A directory holding the file TFDS's builder `tfds_name` downloads, if one is bundled."""
  for corpus in CORPORA.values():
    if corpus.tfds_name == tfds_name:
      return str((ROOT / corpus.file).parent)
  return None


def _corpus(name: str) -> Corpus:
  if name not in CORPORA:
    raise UserError(f"data.source 'bundled:{name}': no such bundled corpus; jaxgen ships "
                    f"{', '.join(CORPORA)}")
  return CORPORA[name]
