"""Where training text comes from: `data.source` strings, and the train/val split."""

from __future__ import annotations

import os

import numpy as np

from jaxgen.errors import UserError

SUPPORTED_SCHEMES = ("text:PATH",)


def load_text(source: str) -> str:
  """Reads the corpus named by `source` ("text:PATH"), checked for common mistakes.

  PATH is relative to the current directory; `~` is expanded.
  """
  scheme, sep, rest = source.partition(":")
  if not sep or scheme != "text":
    raise UserError(
        f"data.source {source!r} has no known scheme; supported: "
        f"{', '.join(SUPPORTED_SCHEMES)} (e.g. text:data/input.txt)")
  if not rest:
    raise UserError(f"data.source {source!r} names no file; use text:PATH")
  return _read_text_file(rest)


def split_train_val(tokens: np.ndarray, val_fraction: float = 0.1
                    ) -> tuple[np.ndarray, np.ndarray]:
  """nanoGPT's split: the first (1 - val_fraction) of the tokens train, the rest validate."""
  if not 0.0 <= val_fraction < 1.0:
    raise UserError(f"data.val_fraction is {val_fraction}; it must be in [0, 1)")
  n_train = int(len(tokens) * (1.0 - val_fraction))
  return tokens[:n_train], tokens[n_train:]


def _read_text_file(path: str) -> str:
  expanded = os.path.expanduser(path)
  resolved = os.path.abspath(expanded)
  shown = path if path == resolved else f"{path} (= {resolved})"
  if not os.path.exists(expanded):
    raise UserError(f"data.source file {shown} does not exist; fix the path in "
                    "data.source (relative paths start at the current directory)")
  if os.path.isdir(expanded):
    raise UserError(f"data.source path {shown} is a directory; point text:PATH "
                    "at a text file inside it")
  try:
    with open(expanded, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise UserError(f"cannot read data.source file {shown}: {e.strerror}; check "
                    "its permissions") from None
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"data.source file {shown} is not valid UTF-8 (bad byte "
                    f"0x{raw[e.start]:02x} at byte offset {e.start}); convert it "
                    "to UTF-8, e.g. with iconv") from None
  if not text.strip():
    raise UserError(f"data.source file {shown} is empty or whitespace only; "
                    "point data.source at a file with training text")
  return text
