"""Mixtures: several document sources drawn from in proportion to their weights.

`data.mixture='store:/d/web:0.7,store:/d/code:0.3'` trains on rows from each
component source (a token store or any raw document source) in those
proportions; every other data.* key applies to each component as it would to
data.source alone (its split, tokenizer, mode). Which component a row comes
from follows the weighted interleave of Grain's `mix` (a fixed, evenly spread
pattern, not random draws), so a run is deterministic
in its seed and step and a batch of B rows holds each component's share of B
up to one row:

- windows: global row k of the run comes from the component the interleave
  gives for k (`selection`), at a window drawn from `default_rng([seed, batch, component])`;
  a batch is a function of (seed, batch index) alone, so, as for one source,
  any number of processes resumes it.
- concat and pack: each host interleaves rows of its components' own streams
  (`grain.IterDataset.mix`), and the iterator's state holds every component's
  position: exact resume with the same number of processes.

The iterator also counts the tokens it drew from each component (weights where
the batch has them: real tokens, not padding) and keeps the counts in its
state, so they continue across a resume; the loop logs them. Validation
evaluates each component's own validation split, and the mixed loss is the
weighted mean of theirs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from jaxgen.errors import UserError

@dataclasses.dataclass(frozen=True)
class Component:
  name: str  # in metrics: tokens_NAME, val_loss_NAME
  source: str
  weight: float


def parse(text: str) -> list[Component]:
  """'SOURCE:WEIGHT,SOURCE:WEIGHT,...' -> components, named after their sources."""
  parts = [p.strip() for p in str(text).split(",") if p.strip()]
  if not parts:
    raise UserError(f"data.mixture={text!r} names no source; use SOURCE:WEIGHT,... "
                    "(e.g. 'store:/d/web:0.7,store:/d/code:0.3')")
  out, names = [], set()
  for part in parts:
    source, sep, weight = part.rpartition(":")
    try:
      w = float(weight)
    except ValueError:
      w = float("nan")
    if not sep or not source or not w > 0 or w == float("inf"):
      raise UserError(f"data.mixture entry {part!r} is not SOURCE:WEIGHT with a positive "
                      "weight; write e.g. store:/d/web:0.7")
    name = _name(source)
    base, i = name, 2
    while name in names:
      name, i = f"{base}_{i}", i + 1
    names.add(name)
    out.append(Component(name, source, w))
  return out


def _name(source: str) -> str:
  """A metric-friendly name: the last path part without extensions or glob characters."""
  rest = source.partition(":")[2].rstrip("/") or source
  stem = os.path.basename(rest).split(".")[0]
  return re.sub(r"[^0-9A-Za-z_]+", "_", stem).strip("_") or "source"


def component_cfg(data_cfg: Any, component: Component) -> Any:
  """data_cfg for one component: its source, everything else shared."""
  cfg = data_cfg.copy_and_resolve_references()
  cfg.source = component.source
  cfg.mixture = ""
  return cfg


def tokenizer(parts: Sequence[tuple[Component, Any]], texts):
  """The one tokenizer every component uses: each token store's own, and the config's for
  raw sources (a character vocabulary from `texts()`); they must be the same."""
  from jaxgen.data.tokenizer import build_tokenizer
  stores = [(c, cfg) for c, cfg in parts if str(cfg.source).startswith("store:")]
  raw = [(c, cfg) for c, cfg in parts if not str(cfg.source).startswith("store:")]
  built = [(c, build_tokenizer(cfg, lambda: ())) for c, cfg in stores]
  if raw:
    built.append((raw[0][0], build_tokenizer(raw[0][1], texts)))
  first, tok = built[0]
  for c, other in built[1:]:
    if other != tok:
      raise UserError(f"data.mixture components {first.source!r} and {c.source!r} are "
                      f"tokenized differently ({tok!r} and {other!r}); a mixture needs one "
                      "tokenizer: prepare the stores with the same one")
  return tok


def make_dataset(parts: Sequence[tuple[Component, Any]], tokenizer, *, seq_len: int,
                 batch_size: int, mode: str, seed: int, shuffle: bool = True,
                 shard_index: int = 0, shard_count: int = 1,
                 prefetch: int = 2) -> grain.IterDataset:
  """This host's training batches drawn from `parts` ((component, documents), ...):
  the keys of `pipeline.make_dataset` for `mode`, endless."""
  from jaxgen.data import pipeline
  weights = [c.weight for c, _ in parts]
  names = [c.name for c, _ in parts]
  if mode == "windows":
    from jaxgen.data.batches import WindowSampler
    samplers = [WindowSampler(pipeline.token_stream(docs, tokenizer),
                              1, seq_len, seed, split_name=f"{c.name} train")
                for c, docs in parts]
    make = _MixedWindowBatch(samplers, proportions(weights), seed, batch_size * shard_count,
                             shard_index * batch_size, batch_size)
    ds = grain.MapDataset.range(sys.maxsize).map(make).to_iter_dataset(
        pipeline.read_options(prefetch))
    if prefetch:
      ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  else:
    rows = []
    for i, (_, docs) in enumerate(parts):
      # One row at a time, tagged with its component, then mixed by weight.
      ds = pipeline.make_dataset(docs, tokenizer, seq_len=seq_len, batch_size=1, mode=mode,
                                 seed=seed, shuffle=shuffle, shard_index=shard_index,
                                 shard_count=shard_count, prefetch=prefetch)
      rows.append(ds.map(functools.partial(_tag, i)))
    ds = grain.IterDataset.mix(rows, weights).batch(batch_size, batch_fn=_stack_rows)
  return _CountedDataset(ds, names, seq_len,
                        (proportions(weights), batch_size * shard_count)
                        if mode == "windows" else None, shard_index)


def _tag(index: int, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {**row, "component": np.full([len(row["inputs"])], index, np.int32)}


def _stack_rows(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def proportions(weights: Sequence[float]) -> list[int]:
  """Integer proportions of the interleave: the smallest weight counts 100."""
  low = min(weights)
  return [max(1, round(100 * w / low)) for w in weights]


def counts(props: Sequence[int], rows: np.ndarray) -> np.ndarray:
  """int64 [len(rows), C]: how many of the first `rows` rows each component gives.

  The interleave Grain's mix uses: component i takes its share of what the
  components before it left, rounded down, so every prefix of K rows holds
  each component's share of K up to one row.
  """
  curr = np.asarray(rows, np.int64)
  remaining, out = sum(props), []
  for p in props:
    nxt = curr * (remaining - p) // remaining
    out.append(curr - nxt)
    curr, remaining = nxt, remaining - p
  return np.stack(out, axis=-1)


def selection(props: Sequence[int], start: int, stop: int) -> np.ndarray:
  """int32 [stop - start]: the component of each global row in [start, stop)."""
  c = counts(props, np.arange(start, stop + 1))
  return np.argmax(np.diff(c, axis=0), axis=1).astype(np.int32)


class _MixedWindowBatch:
  """Local batch j of a windows mixture: this host's rows of global batch j."""

  def __init__(self, samplers, props, seed: int, global_rows: int, first_row: int,
               rows: int):
    self.samplers, self.props, self.seed = samplers, list(props), seed
    self.global_rows, self.first_row, self.rows = global_rows, first_row, rows

  def __call__(self, j: int) -> dict[str, np.ndarray]:
    j = int(j)
    comps = selection(self.props, j * self.global_rows, (j + 1) * self.global_rows)
    width = self.samplers[0].seq_len + 1
    windows = np.empty([self.global_rows, width], np.int32)
    for c, sampler in enumerate(self.samplers):
      at = np.flatnonzero(comps == c)
      if not len(at):
        continue
      rng = np.random.default_rng([self.seed % 2**64, j, c])
      starts = rng.integers(0, len(sampler.tokens) - sampler.seq_len, size=len(at))
      windows[at] = sampler.windows(starts)
    mine = slice(self.first_row, self.first_row + self.rows)
    return {"inputs": np.ascontiguousarray(windows[mine, :-1]),
            "targets": np.ascontiguousarray(windows[mine, 1:]),
            "component": comps[mine]}


class _CountedDataset(grain.IterDataset):
  """Drops each batch's "component" rows, counting this host's tokens per component.

  `windows` is (proportions, global rows per batch) for a windows mixture, whose
  counts follow from a batch index alone: a bare windows state (`set_state` from
  another number of processes) gives process 0 the whole run's counts so far and
  the others none, so their sum stays the run's.
  """

  def __init__(self, parent: grain.IterDataset, names: list[str], seq_len: int,
               windows: tuple | None, shard_index: int):
    super().__init__(parent)
    self.names, self.seq_len, self.windows, self.shard_index = (names, seq_len, windows,
                                                                shard_index)

  def __iter__(self):
    return _CountedIterator(self._parent.__iter__(), self)


class _CountedIterator(grain.DatasetIterator):

  def __init__(self, parent, ds: _CountedDataset):
    super().__init__(parent)
    self.ds = ds
    self.tokens = dict.fromkeys(ds.names, 0)

  def __next__(self):
    batch = dict(next(self._parent))
    comps = batch.pop("component")
    per_row = (batch["weights"].sum(axis=1) if "weights" in batch
               else np.full(len(comps), self.ds.seq_len))
    for c, n in zip(comps.tolist(), per_row.tolist()):
      self.tokens[self.ds.names[c]] += int(n)
    return batch

  def get_state(self):
    return {"parent": self._parent.get_state(), "tokens": dict(self.tokens)}

  def set_state(self, state):
    if "parent" not in state and self.ds.windows is not None:  # a bare windows state
      self._parent.set_state(state)
      props, global_rows = self.ds.windows
      rows = counts(props, np.asarray([state["next_index"] * global_rows]))[0]
      drawn = rows * self.ds.seq_len if self.ds.shard_index == 0 else np.zeros_like(rows)
      self.tokens = {n: int(t) for n, t in zip(self.ds.names, drawn)}
      return
    self._parent.set_state(state["parent"])
    self.tokens = {n: int(state["tokens"].get(n, 0)) for n in self.ds.names}

  def drawn_tokens(self) -> dict[str, int]:
    """This host's tokens drawn from each component so far (the batches consumed)."""
    return dict(self.tokens)


def mixed_loss(parts: Sequence[tuple[Component, float]]) -> float:
  """The weighted mean of the components' losses."""
  total = sum(c.weight for c, _ in parts)
  return float(sum(c.weight * loss for c, loss in parts) / total)
