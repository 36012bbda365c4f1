"""The train/validation split of local files, for every path that reads them.

The in-memory sources, `jaxgen data prepare` (the token store) and the lazy pack
path decide it here, from each record's hash and length, so the three agree record
for record. Documents (data.doc_split, data/sources.py's docstring has the rules):
'tail' holds out the last ceil(val_fraction * n) documents, 'hashed' whole documents
in the order of their text's hash (identical ones together) until the next would
pass val_fraction of the characters, and that one is cut there; one document is
cut as nanoGPT cuts tiny Shakespeare. Pairs (data.pair_split, data/pairs.py):
'tail' holds out the last ceil(val_fraction * n), 'hashed' groups of pairs that
share a source or a target text, in the order of a hash of their smallest text.
"""

from __future__ import annotations

import collections
import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxgen import messages
from jaxgen.errors import UserError
from jaxgen.messages import count

_LARGE_VALIDATION = 2.0  # a validation share above this many val_fractions is reported


def hash64(text: str, prefix: bytes = b"", errors: str = "surrogatepass") -> int:
  """The first 8 bytes of sha256(prefix + text), big-endian: sorts as the digests do.
  surrogatepass: a JSON string may hold a lone surrogate ("\\ud800"), which UTF-8 refuses."""
  return int.from_bytes(hashlib.sha256(prefix + text.encode("utf-8", errors)).digest()[:8],
                        "big")


def hash64_utf8(data: list[bytes]) -> np.ndarray:
  """hash64 of texts already encoded (as hash64 encodes them), as uint64 [n]."""
  digests = b"".join([hashlib.sha256(b).digest()[:8] for b in data])
  return np.frombuffer(digests, ">u8").astype(np.uint64)


def pair_keys(source: str, target: str) -> tuple[int, int, int]:
  """(pair, source, target) hashes: what the hashed pair split groups and orders by."""
  return hash64(source + "\t" + target, errors="strict"), hash64(source, b"s"), hash64(
      target, b"t")


def check_val_fraction(val_fraction: float) -> None:
  if not 0.0 <= val_fraction < 1.0:
    raise UserError(f"data.val_fraction is {val_fraction}; it must be in [0, 1)")


def document_heads(source: str, val_fraction: float, rule: str, hashes: np.ndarray,
                   lengths: np.ndarray) -> np.ndarray:
  """Per document -1 (it trains whole), 0 (it evaluates whole) or h > 0 (its first h
  characters train, the rest evaluate); `hashes` matter for the hashed rule only."""
  n = len(lengths)
  check_val_fraction(val_fraction)
  head = np.full(n, -1, np.int64)
  if n == 1 and (val_fraction > 0 or lengths[0] == 0):
    head[0] = int(lengths[0] * (1.0 - val_fraction))
    if head[0] == 0 or head[0] == lengths[0]:
      raise UserError(f"data.source {source!r} is one document of "
                      f"{count(int(lengths[0]), 'character')}, too short to split with "
                      f"data.val_fraction={val_fraction}; use a longer text or another "
                      "val_fraction")
  elif val_fraction > 0 and rule == "hashed":
    head = _hashed_heads(hashes, lengths, val_fraction, source, n)
  elif val_fraction > 0:
    # Ceil, forgiving float noise: 0.28 * 25 is 7.000000000000001, which means 7 documents.
    n_eval = max(1, math.ceil(val_fraction * n - 1e-9))
    if n_eval >= n:
      raise UserError(f"data.source {source!r} has {count(n, 'document')}; "
                      f"data.val_fraction={val_fraction} would leave none to train on; "
                      "add documents or lower val_fraction")
    head[n - n_eval:] = 0
  _check_validation_share(source, head, lengths, val_fraction, rule)
  return head


def apply_heads(docs, head: np.ndarray) -> tuple[list, list]:
  """(train, eval) texts of `docs` by `document_heads`, both in the files' order."""
  train, eval_ = [], []
  for text, h in zip(docs, head.tolist()):
    if h < 0:
      train.append(text)
      continue
    if h:
      train.append(text[:h])
    eval_.append(text[h:])
  return train, eval_


def _hashed_heads(hashes, lengths, val_fraction, source, n) -> np.ndarray:
  """Whole documents (identical ones together) in hash order until the next passes the
  target; that one is cut, each of its k copies at the same character."""
  total = int(lengths.sum())
  target = total - int(total * (1.0 - val_fraction))  # nanoGPT's validation characters
  uniq, first, inverse, copies = np.unique(hashes, return_index=True, return_inverse=True,
                                           return_counts=True)
  size = lengths[first] * copies
  before = np.cumsum(size) - size
  taken = before < target
  head_of = np.full(len(uniq), -1, np.int64)
  head_of[taken] = 0
  last = np.flatnonzero(taken)[-1] if taken.any() else None
  if last is not None and before[last] + size[last] > target:
    length, k = int(lengths[first[last]]), int(copies[last])
    head_of[last] = max(0, length + (target - int(before[last])) // -k)
  head = head_of[inverse.reshape(-1)]
  held = int(np.sum(np.where(head >= 0, lengths - np.maximum(head, 0), 0)))
  if not 0 < held < total:
    raise UserError(f"data.source {source!r} has {count(n, 'document')} of "
                    f"{count(total, 'character')} in all, too few to split with "
                    f"data.val_fraction={val_fraction}; use more text or another val_fraction")
  return head


def _check_validation_share(source, head, lengths, val_fraction: float, rule: str) -> None:
  """One warning line when validation holds more than _LARGE_VALIDATION times
  val_fraction of the characters (beyond one character of rounding)."""
  total = int(lengths.sum())
  held = int(np.sum(np.where(head >= 0, lengths - np.maximum(head, 0), 0)))
  if held <= _LARGE_VALIDATION * val_fraction * total + 1:
    return
  n, n_eval = len(lengths), int(np.sum(head >= 0))
  why = (f"data.doc_split='tail' holds out whole documents from the end ({n_eval:,} of "
         f"{n:,}) whatever their sizes; data.doc_split='hashed' holds out "
         "val_fraction of the characters" if rule == "tail" and n > 1
         else "identical documents stay on one side; use more varied text")
  messages.warn(f"data.source {source!r} holds out {held:,} of its "
                f"{count(total, 'character')} ({held / total:.0%}) for validation, more "
                f"than twice data.val_fraction={val_fraction}: {why}")


def pair_holdout(d: Any, keys: np.ndarray,
                 smallest_texts: Callable[[np.ndarray], list[tuple[str, str]]]) -> np.ndarray:
  """Which of n pairs evaluate (bool [n]), from their `pair_keys` rows [n, 3].

  'hashed': a group joins pairs that share a source or a target text (union-find),
  so no text is on both sides; groups are taken in the order of a hash of their
  smallest "source TAB target" until ceil(val_fraction * n) pairs are held out: the
  choice depends on the texts alone, not on the file's order, and adding pairs moves
  few others. `smallest_texts(indices)` gives the pairs at `indices` (those in groups
  of several, whose smallest text a single pair's hash cannot stand for).
  """
  n = len(keys)
  n_eval = math.ceil(d.val_fraction * n)
  if n < 2 or n_eval < 1 or n_eval >= n:
    raise UserError(f"data.source {d.source!r} has {count(n, 'pair')}; with "
                    f"data.val_fraction={d.val_fraction} both the train and the validation "
                    "split need at least one: add pairs or change data.val_fraction")
  held = np.zeros(n, bool)
  if d.get("pair_split", "tail") != "hashed":
    held[n - n_eval:] = True
    return held
  parent = np.arange(n)

  def root(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  first_with = {}
  for i in range(n):
    for key in (("s", int(keys[i, 1])), ("t", int(keys[i, 2]))):
      j = first_with.setdefault(key, i)
      parent[root(i)] = root(j)
  roots = np.array([root(i) for i in range(n)])
  group_size = np.bincount(roots, minlength=n)
  order_key = keys[:, 0].copy()
  shared = np.flatnonzero(group_size[roots] > 1)
  if len(shared):
    smallest = {}
    for i, (source, target) in zip(shared, smallest_texts(shared)):
      text = source + "\t" + target
      r = roots[i]
      smallest[r] = min(smallest.get(r, text), text)
    for r, text in smallest.items():
      order_key[r] = hash64(text, errors="strict")
  group_roots = np.unique(roots)
  members = collections.defaultdict(list)
  for i, r in enumerate(roots):
    members[r].append(i)
  taken = 0
  for r in group_roots[np.argsort(order_key[group_roots], kind="stable")]:
    if taken >= n_eval:
      break
    held[members[r]] = True
    taken += len(members[r])
  if held.all():
    raise UserError(f"data.source {d.source!r}: its {n} pairs all share source or target "
                    "texts, so data.pair_split='hashed' cannot hold any out without "
                    "leaking; use data.pair_split='tail' or more varied pairs")
  if held.sum() > 2 * n_eval + 1:
    messages.warn(f"data.source {d.source!r} holds out {count(int(held.sum()), 'pair')} "
                  f"of {n:,} for validation, more than twice data.val_fraction="
                  f"{d.val_fraction}: pairs sharing a source or target text stay "
                  "together; data.pair_split='tail' holds out exactly the last ones")
  return held
