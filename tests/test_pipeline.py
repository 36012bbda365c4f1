"""Tests for jaxgen.data.pipeline: the Grain input pipeline."""

import collections
import json

import numpy as np
import pytest

from jaxgen.data.batches import WindowSampler
from jaxgen.data.pipeline import windows_state, describe, make_dataset
from jaxgen.errors import UserError

PAD, EOS, BOS = 0, 1, 2


class ByteTokenizer:
  """UTF-8 bytes offset past the three specials."""

  pad_id, eos_id, bos_id = PAD, EOS, BOS

  def encode(self, text):
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + 3

  def decode(self, ids):
    return bytes(int(i) - 3 for i in ids).decode("utf-8", "replace")


class WordIdTokenizer(ByteTokenizer):
  """Space-separated integers; makes every token of a corpus identifiable."""

  def encode(self, text):
    return np.asarray([int(w) + 3 for w in text.split()], np.int32)

  def decode(self, ids):
    return " ".join(str(int(i) - 3) for i in ids)


def _unique_token_docs(n_docs, max_len, seed=0):
  """Docs whose tokens are all distinct: token id -> (doc, index in [bos]+ids+[eos])."""
  rng = np.random.default_rng(seed)
  docs, where, next_word = [], {}, 0
  for d in range(n_docs):
    n = int(rng.integers(1, max_len + 1))
    words = list(range(next_word, next_word + n))
    next_word += n
    docs.append(" ".join(map(str, words)))
    for q, w in enumerate(words, start=1):
      where[w + 3] = (d, q)
  return docs, where


def _full(doc, tok):
  return np.concatenate([[BOS], tok.encode(doc), [EOS]])


def _stream(docs, tok):
  # Independent of the pipeline's token_stream: each doc followed by eos.
  return np.concatenate([np.append(tok.encode(d), EOS) for d in docs]).astype(np.int32)


def _take(ds, n=None):
  it = iter(ds)
  out = []
  for batch in it:
    out.append(batch)
    if n is not None and len(out) == n:
      break
  it.close()
  return out


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _random_docs(n=40, seed=0):
  rng = np.random.default_rng(seed)
  return ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, int(rng.integers(1, 60))))
          for _ in range(n)]


@pytest.mark.parametrize("mode", ["windows", "concat", "pack"])
def test_same_seed_same_batches_other_seed_different(mode):
  docs, tok = _random_docs(), ByteTokenizer()
  kw = dict(seq_len=16, batch_size=4, mode=mode)
  a = _take(make_dataset(docs, tok, seed=3, **kw), 4)
  b = _take(make_dataset(docs, tok, seed=3, prefetch=0, **kw), 4)
  c = _take(make_dataset(docs, tok, seed=4, **kw), 4)
  _assert_batches_equal(a, b)
  assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))
  for batch in a:
    assert batch["inputs"].shape == batch["targets"].shape == (4, 16)
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32


def test_windows_match_window_sampler():
  docs, tok = _random_docs(), ByteTokenizer()
  sampler = WindowSampler(_stream(docs, tok), batch_size=5, seq_len=12, seed=7)
  got = _take(make_dataset(docs, tok, seq_len=12, batch_size=5, mode="windows", seed=7), 4)
  _assert_batches_equal(got, [sampler.batch(j) for j in range(4)])


def test_windows_global_stream_independent_of_host_count():
  docs, tok = _random_docs(), ByteTokenizer()
  kw = dict(seq_len=8, mode="windows", seed=11)
  one = _take(make_dataset(docs, tok, batch_size=6, **kw), 3)
  hosts = [_take(make_dataset(docs, tok, batch_size=3, shard_index=h, shard_count=2, **kw), 3)
           for h in range(2)]
  for j in range(3):
    for k in ("inputs", "targets"):
      np.testing.assert_array_equal(
          one[j][k], np.concatenate([hosts[0][j][k], hosts[1][j][k]]))
  # The window targets are the inputs shifted by one within the stream.
  np.testing.assert_array_equal(one[0]["inputs"][:, 1:], one[0]["targets"][:, :-1])


def test_windows_state_is_the_batch_index_on_any_host_count():
  # A checkpoint from 2 hosts restores on 1 by this state alone (train/loop.py).
  docs, tok = _random_docs(), ByteTokenizer()
  kw = dict(seq_len=8, mode="windows", seed=11)
  one = _take(make_dataset(docs, tok, batch_size=6, **kw), 5)
  two = iter(make_dataset(docs, tok, batch_size=3, shard_index=1, shard_count=2, **kw))
  for _ in range(3):
    next(two)
  assert two.get_state() == windows_state(3)
  resumed = iter(make_dataset(docs, tok, batch_size=6, **kw))
  resumed.set_state(windows_state(3))
  _assert_batches_equal([next(resumed), next(resumed)], one[3:5])


def test_windows_single_pass_is_finite():
  docs, tok = _random_docs(), ByteTokenizer()
  n = len(_stream(docs, tok))
  got = _take(make_dataset(docs, tok, seq_len=8, batch_size=4, mode="windows", seed=0,
                           repeat=False))
  assert len(got) == max(1, (n - 1) // (8 * 4))


def test_concat_chunks_cover_stream_in_order_without_shuffle():
  docs, tok = _random_docs(), ByteTokenizer()
  L, B = 13, 3
  got = _take(make_dataset(docs, tok, seq_len=L - 1, batch_size=B, mode="concat", seed=0,
                           shuffle=False, repeat=False))
  stream = _stream(docs, tok)
  n_batches = len(stream) // L // B
  assert len(got) == n_batches
  chunks = np.concatenate([np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1)
                           for b in got])
  np.testing.assert_array_equal(chunks.reshape(-1), stream[:n_batches * B * L])
  for b in got:
    np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])


def test_concat_shuffles_each_epoch_differently():
  docs, tok = _random_docs(), ByteTokenizer()
  stream = _stream(docs, tok)
  n_chunks = len(stream) // 9
  # batch_size divides the chunk count so batches align with epochs.
  got = _take(make_dataset(docs, tok, seq_len=8, batch_size=1, mode="concat", seed=5),
              2 * n_chunks)
  rows = [tuple(np.append(b["inputs"][0], b["targets"][0, -1])) for b in got]
  expected = sorted(tuple(c) for c in stream[:n_chunks * 9].reshape(n_chunks, 9))
  epoch1, epoch2 = rows[:n_chunks], rows[n_chunks:]
  assert sorted(epoch1) == expected and sorted(epoch2) == expected
  assert epoch1 != epoch2
  assert epoch1 != [tuple(c) for c in stream[:n_chunks * 9].reshape(n_chunks, 9)]


def _check_pack_epoch(batches, docs, where, tok, seq_len):
  """Checks every packed row; returns Counters of (doc, position) for inputs/targets."""
  full = [_full(d, tok) for d in docs]
  seen_inputs, seen_targets = collections.Counter(), collections.Counter()
  for batch in batches:
    assert batch["weights"].dtype == np.float32
    for b in range(batch["inputs"].shape[0]):
      seg = batch["segment_ids"][b]
      x_in, x_t, pos = batch["inputs"][b], batch["targets"][b], batch["positions"][b]
      np.testing.assert_array_equal(batch["weights"][b], (seg != 0).astype(np.float32))
      # Padding: only at the end, pad ids, position 0.
      n_used = int(np.sum(seg != 0))
      assert np.all(seg[n_used:] == 0) and np.all(seg[:n_used] != 0)
      assert np.all(x_in[n_used:] == PAD) and np.all(x_t[n_used:] == PAD)
      assert np.all(pos[n_used:] == 0)
      ids = seg[:n_used]
      assert np.all(np.diff(ids) >= 0) and (n_used == 0 or ids[0] == 1)
      for s_id in np.unique(ids):
        idx = np.flatnonzero(seg == s_id)
        assert np.array_equal(idx, np.arange(idx[0], idx[-1] + 1))  # contiguous
        seg_in, seg_t = x_in[idx], x_t[idx]
        np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))
        # Locate the document piece from any ordinary token.
        k = next(k for k in range(len(idx)) if int(seg_in[k]) in where or int(seg_t[k]) in where)
        if int(seg_in[k]) in where:
          d, q = where[int(seg_in[k])]
        else:
          d, q = where[int(seg_t[k])]
          q -= 1
        start = q - k
        assert start % seq_len == 0
        np.testing.assert_array_equal(seg_in, full[d][start:start + len(idx)])
        np.testing.assert_array_equal(seg_t, full[d][start + 1:start + 1 + len(idx)])
        seen_inputs.update((d, start + i) for i in range(len(idx)))
        seen_targets.update((d, start + 1 + i) for i in range(len(idx)))
  return seen_inputs, seen_targets


def test_pack_rows_are_documents_and_no_token_is_lost():
  seq_len = 10
  docs, where = _unique_token_docs(60, max_len=3 * seq_len)  # some split in 3-4 pieces
  tok = WordIdTokenizer()
  got = _take(make_dataset(docs, tok, seq_len=seq_len, batch_size=4, mode="pack", seed=2,
                           repeat=False))
  for batch in got:
    assert batch["inputs"].shape == (4, seq_len)
  seen_inputs, seen_targets = _check_pack_epoch(got, docs, where, tok, seq_len)
  lengths = [len(tok.encode(d)) + 2 for d in docs]
  assert seen_inputs == collections.Counter(
      (d, p) for d, n in enumerate(lengths) for p in range(n - 1))
  assert seen_targets == collections.Counter(
      (d, p) for d, n in enumerate(lengths) for p in range(1, n))
  # Packing did something: fewer rows than pieces.
  pieces = sum(-(-(n - 1) // seq_len) for n in lengths)
  rows = sum(int(np.any(b["segment_ids"][r] != 0)) for b in got for r in range(4))
  assert rows < pieces


@pytest.mark.parametrize("mode", ["pack", "concat"])
def test_shards_split_documents(mode):
  docs, where = _unique_token_docs(21, max_len=12)
  tok = WordIdTokenizer()
  seen = []
  for h in range(2):
    got = _take(make_dataset(docs, tok, seq_len=8, batch_size=2, mode=mode, seed=1,
                             repeat=False, shard_index=h, shard_count=2))
    seen.append({where[int(t)][0] for b in got for t in b["inputs"].reshape(-1)
                 if int(t) in where})
  assert not seen[0] & seen[1]
  if mode == "pack":  # pack drops nothing, concat drops the stream's tail
    assert seen[0] == set(range(0, 21, 2)) and seen[1] == set(range(1, 21, 2))
  else:
    assert seen[0] <= set(range(0, 21, 2)) and seen[1] <= set(range(1, 21, 2))


@pytest.mark.parametrize("mode", ["windows", "concat", "pack"])
def test_get_state_set_state_resumes_with_prefetch(mode):
  docs, tok = _random_docs(), ByteTokenizer()
  kw = dict(seq_len=16, batch_size=3, mode=mode, seed=9, prefetch=2)
  it = iter(make_dataset(docs, tok, **kw))
  for _ in range(7):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(5)]
  it.close()
  it2 = iter(make_dataset(docs, tok, **kw))
  it2.set_state(state)
  _assert_batches_equal([next(it2) for _ in range(5)], expected)
  it2.close()


def test_pack_one_document_per_row_equals_concat():
  seq_len, batch_size = 12, 3
  rng = np.random.default_rng(0)
  # [bos] + ids + [eos] is exactly seq_len + 1 tokens: one piece fills one row.
  docs = ["".join(chr(97 + int(c)) for c in rng.integers(0, 26, seq_len - 1))
          for _ in range(7)]

  class BosFirst(ByteTokenizer):
    # Concat mode puts only eos between docs; prepending bos makes its chunks
    # exactly the packed documents.
    def encode(self, text):
      return np.concatenate([[BOS], super().encode(text)]).astype(np.int32)

  kw = dict(seq_len=seq_len, batch_size=batch_size, seed=0, shuffle=False, repeat=False)
  packed = _take(make_dataset(docs, ByteTokenizer(), mode="pack", **kw))
  concat = _take(make_dataset(docs, BosFirst(), mode="concat", **kw))
  assert len(concat) == 2 and len(packed) == 3  # pack keeps the 7th doc, padded
  for p, c in zip(packed, concat):
    np.testing.assert_array_equal(p["inputs"], c["inputs"])
    np.testing.assert_array_equal(p["targets"], c["targets"])
    np.testing.assert_array_equal(p["segment_ids"], np.ones((batch_size, seq_len)))
    np.testing.assert_array_equal(p["positions"], np.broadcast_to(np.arange(seq_len),
                                                                  (batch_size, seq_len)))
  last = packed[2]
  np.testing.assert_array_equal(last["weights"].sum(axis=1), [seq_len, 0, 0])


def test_describe_marks_segments_and_counts_padding():
  tok = ByteTokenizer()
  batch = _take(make_dataset(["ab", "cde", "f"], tok, seq_len=8, batch_size=2, mode="pack",
                             seed=0, shuffle=False, repeat=False))[0]
  text = describe(batch, tok)
  # Docs of 4, 5 and 3 tokens give 3+4+2 = 9 input tokens: 16 - 9 pad.
  assert "padding: 7 of 16 tokens" in text
  lines = text.splitlines()
  assert lines[2] == "row 0 (2 segments, 1 pad): <bos>ab | <bos>cde"
  assert lines[3] == "row 1 (1 segment, 6 pad): <bos>f"  # one: singular
  windows = _take(make_dataset(["ab\ncd"], tok, seq_len=4, batch_size=1, mode="windows",
                               seed=0), 1)[0]
  assert describe(windows, tok).splitlines()[0].startswith("1 row x 4 tokens; ")
  assert describe(windows, tok).splitlines()[1].startswith("row 0: ")
  assert "\n" not in describe(windows, tok).splitlines()[1]


def test_bad_input_is_one_line_user_error():
  tok = ByteTokenizer()
  with pytest.raises(UserError, match="mode 'bogus' is unknown") as err:
    make_dataset(["abc"], tok, seq_len=4, batch_size=1, mode="bogus", seed=0)
  assert "\n" not in str(err.value)
  with pytest.raises(UserError, match="window needs seq_len"):
    make_dataset(["abc"], tok, seq_len=8, batch_size=1, mode="windows", seed=0)
  with pytest.raises(UserError, match="too few for a batch"):
    make_dataset(["abc"], tok, seq_len=2, batch_size=4, mode="concat", seed=0, repeat=False)
  with pytest.raises(UserError, match="the data has 1 document, fewer than the 2 hosts"):
    make_dataset(["abc"], tok, seq_len=2, batch_size=1, mode="pack", seed=0, shard_count=2)
  with pytest.raises(UserError, match="has 1 token but one window"):  # counts: singular at 1
    make_dataset([""], tok, seq_len=2, batch_size=1, mode="windows", seed=0)
  with pytest.raises(UserError, match="1 chunk of seq_len"):
    make_dataset(["abc"], tok, seq_len=2, batch_size=4, mode="concat", seed=0, repeat=False)
