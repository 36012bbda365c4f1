"""data.mixture: weighted interleaving of document sources, deterministic and resumable."""

from __future__ import annotations

import functools
import json

import grain
import numpy as np
import pytest

from jaxgen.data import mixture
from jaxgen.data.tokenizer import ByteTokenizer
from jaxgen.errors import UserError

TOK = ByteTokenizer()
# Each component writes its own letter only, so a row says which component it came from.
DOCS = {"aa": ["a" * (20 + 7 * i) for i in range(30)], "bb": ["b" * (15 + 5 * i) for i in range(30)],
        "cc": ["c" * (30 + 3 * i) for i in range(30)]}
COMPONENTS = mixture.parse("text:/d/aa.txt:0.6,text:/d/bb.txt:0.3,text:/d/cc.txt:0.1")


def _dataset(mode: str, shard_index: int = 0, shard_count: int = 1, batch_size: int = 8,
             prefetch: int = 2):
  parts = [(c, DOCS[c.name]) for c in COMPONENTS]
  return mixture.make_dataset(parts, TOK, seq_len=12, batch_size=batch_size, mode=mode,
                              seed=5, shard_index=shard_index, shard_count=shard_count,
                              prefetch=prefetch)


def _row_components(batch) -> list[int]:
  """Which component each row came from: its letter (pack rows: their first real token)."""
  letters = {int(TOK.encode(ch)[0]): i for i, ch in enumerate("abc")}
  out = []
  for row in np.asarray(batch["targets"]):
    out.append(next(letters[int(t)] for t in row if int(t) in letters))
  return out


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(xs, ys) -> bool:
  return len(xs) == len(ys) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(xs, ys))


def test_parse_names_and_refuses_bad_entries():
  c = mixture.parse("store:/d/web:0.7, store:/e/web/:0.3,jsonl:code.jsonl.gz:1")
  assert [x.name for x in c] == ["web", "web_2", "code"]
  assert [x.weight for x in c] == [0.7, 0.3, 1.0]
  assert c[0].source == "store:/d/web"
  for bad in ("", "store:/d/web", "store:/d/web:0", "store:/d/web:-1", "text:a:inf"):
    with pytest.raises(UserError, match="data.mixture"):
      mixture.parse(bad)


def test_selection_is_grains_weighted_interleave():
  props = mixture.proportions([0.6, 0.3, 0.1])
  ref = grain.MapDataset.mix(
      [grain.MapDataset.range(10**6).map(functools.partial(lambda c, i: c, c)) for c in range(3)],
      props)
  np.testing.assert_array_equal(mixture.selection(props, 0, 3000),
                                [ref[k] for k in range(3000)])
  np.testing.assert_array_equal(mixture.selection(props, 1001, 1500),
                                [ref[k] for k in range(1001, 1500)])
  # Every prefix holds each component's share up to one row.
  counts = mixture.counts(props, np.arange(1, 3001))
  share = np.arange(1, 3001)[:, None] * np.asarray([0.6, 0.3, 0.1])
  assert np.abs(counts - share).max() <= 1


@pytest.mark.parametrize("mode", ["windows", "concat", "pack"])
def test_mixture_is_deterministic_and_resumes_exactly(mode):
  it = iter(_dataset(mode))
  first = _take(it, 4)
  state = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
  drawn = it.drawn_tokens()
  rest = _take(it, 4)
  it.close()
  again = iter(_dataset(mode))
  assert _equal(_take(again, 4), first)  # deterministic in the seed
  again.close()
  resumed = iter(_dataset(mode))
  resumed.set_state(state)
  assert resumed.drawn_tokens() == drawn
  assert _equal(_take(resumed, 4), rest)
  resumed.close()
  # Rows follow the interleave: 8 rows a batch of 0.6/0.3/0.1 shares.
  rows = [c for b in first + rest for c in _row_components(b)]
  assert "component" not in first[0]
  np.testing.assert_array_equal(np.bincount(rows, minlength=3),
                                mixture.counts(mixture.proportions([0.6, 0.3, 0.1]),
                                               np.asarray([64]))[0])
  if mode == "windows":
    np.testing.assert_array_equal(rows, mixture.selection(mixture.proportions([0.6, 0.3, 0.1]),
                                                          0, 64))
  # Tokens drawn: every row's real tokens, by component.
  weights = [b.get("weights", np.ones(b["targets"].shape)).sum(axis=1) for b in first]
  by_row = np.concatenate(weights)
  expect = {c.name: int(by_row[np.asarray([r for b in first for r in _row_components(b)]) == i]
                        .sum()) for i, c in enumerate(COMPONENTS)}
  assert drawn == expect


def test_windows_mixture_does_not_depend_on_the_process_count():
  one = iter(_dataset("windows", batch_size=8, prefetch=0))
  hosts = [iter(_dataset("windows", h, 2, batch_size=4, prefetch=0)) for h in range(2)]
  for _ in range(3):
    whole = next(one)
    halves = [next(h) for h in hosts]
    for k in whole:
      np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), whole[k])
  # Resumed on 2 processes from a 1-process run's step: the same next batch, and the
  # counts of the run so far (process 0 takes them all, so their sum is the run's).
  total = one.drawn_tokens()
  from jaxgen.data.pipeline import windows_state
  moved = [iter(_dataset("windows", h, 2, batch_size=4, prefetch=0)) for h in range(2)]
  for h in moved:
    h.set_state(windows_state(3))
  assert moved[0].drawn_tokens() == total
  assert set(moved[1].drawn_tokens().values()) == {0}
  whole = next(one)
  halves = [next(h) for h in moved]
  np.testing.assert_array_equal(np.concatenate([h["inputs"] for h in halves]), whole["inputs"])
  for it in [one, *hosts, *moved]:
    it.close()


@pytest.mark.slow
def test_training_on_a_mixture_logs_components_and_resumes(tmp_path):
  """metrics.jsonl: tokens drawn per component, a validation loss per component and
  their weighted mean; a run stopped and resumed logs what an uninterrupted one does."""
  from jaxgen.train.loop import train_and_evaluate
  from tests.helpers import tiny_transformer_config
  for name, text in (("prose", "the quick brown fox jumps over the lazy dog. " * 300),
                     ("code", "def f(x):\n    return x + 1\n\n" * 400)):
    (tmp_path / f"{name}.txt").write_text(text)
  spec = f"text:{tmp_path}/prose.txt:0.75,text:{tmp_path}/code.txt:0.25"

  def run(workdir, steps):
    # decay_steps pins the schedule: a 3-step run is the first half of a 6-step one.
    c = tiny_transformer_config("bundled:tiny_shakespeare", steps=steps, log_every=1,
                                batch_size=8, decay_steps=6)
    c.data.update(mixture=spec, tokenizer="byte", mode="pack")
    c.checkpoint.every_steps = 3
    c.eval.update(every_steps=3, steps=1)
    return train_and_evaluate(c, str(workdir))

  run(tmp_path / "whole", 6)
  run(tmp_path / "split", 3)
  run(tmp_path / "split", 6)
  rows = {w: [json.loads(l) for l in (tmp_path / w / "metrics.jsonl").read_text().splitlines()]
          for w in ("whole", "split")}
  train = {w: {r["step"]: r for r in rs if "train_loss" in r} for w, rs in rows.items()}
  for step in range(1, 7):
    a, b = train["whole"][step], train["split"][step]
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-6)
    assert (a["tokens_prose"], a["tokens_code"]) == (b["tokens_prose"], b["tokens_code"])
  last = train["whole"][6]
  # 8 rows a step, 6 of prose and 2 of code: about 3:1 of the real tokens.
  assert 2.0 < last["tokens_prose"] / last["tokens_code"] < 4.5
  evals = [r for r in rows["whole"] if "val_loss" in r and "val_loss_prose" in r]
  assert len(evals) == 2
  for r in evals:
    np.testing.assert_allclose(r["val_loss"], 0.75 * r["val_loss_prose"]
                               + 0.25 * r["val_loss_code"], rtol=1e-6)


def test_mixture_refuses_paired_components(tmp_path):
  from jaxgen import config_check
  from tests.helpers import tiny_transformer_config
  (tmp_path / "p.tsv").write_text("a\tb\n" * 10)
  c = tiny_transformer_config("bundled:tiny_shakespeare")
  c.data.mixture = f"tsv:{tmp_path}/p.tsv:1,bundled:tiny_shakespeare:1"
  with pytest.raises(UserError, match="pairs"):
    config_check.check(c)
