"""Tests for jaxgen.data: the character tokenizer and window batches (sources: test_sources.py)."""

import json
import os

import numpy as np
import pytest

from jaxgen.data.batches import WindowSampler
from jaxgen.data.tokenizer import CharTokenizer, load_tokenizer
from jaxgen.errors import UserError
from tests.helpers import one_line


# Tokenizer.


def test_vocabulary_is_sorted_distinct_chars():
  tok = CharTokenizer.from_text("hello, world\n")
  assert tok.chars == "\n ,dehlorw"
  assert tok.vocab_size == 10 + 3  # pad, bos, eos after the characters
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (10, 11, 12)
  np.testing.assert_array_equal(tok.encode("\nw"), [0, 9])


def test_encode_decode_round_trip_with_non_ascii():
  text = "Ünïcödé ✓ and emoji 🙂!\nsecond line"
  tok = CharTokenizer.from_text(text)
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.shape == (len(text),)
  assert ids.min() == 0 and ids.max() == len(tok.chars) - 1
  assert tok.decode(ids) == text
  assert tok.decode(ids.tolist()) == text
  assert tok.decode(np.asarray([], np.int32)) == ""


def test_unknown_char_names_char_and_position():
  tok = CharTokenizer.from_text("abc")
  with pytest.raises(UserError) as err:
    tok.encode("abcaXbZ")
  message = one_line(err)
  assert "'X'" in message and "position 4" in message
  assert "training corpus" in message


def test_decode_rejects_ids_outside_vocabulary():
  tok = CharTokenizer.from_text("abc")
  assert tok.decode([0, tok.pad_id, tok.bos_id, 1, tok.eos_id]) == "ab"
  with pytest.raises(ValueError, match="id 6"):
    tok.decode([0, 6])


def test_save_load_round_trip(tmp_path):
  text = "To be, or not to be: 🙂"
  tok = CharTokenizer.from_text(text)
  path = tmp_path / "tokenizer.json"
  tok.save(path)
  assert json.loads(path.read_text(encoding="utf-8")) == {
      "kind": "char", "chars": tok.chars}
  assert os.listdir(tmp_path) == ["tokenizer.json"]  # no temp file left behind
  for loaded in (CharTokenizer.load(path), load_tokenizer(str(path))):
    assert isinstance(loaded, CharTokenizer)
    assert loaded == tok
    np.testing.assert_array_equal(loaded.encode(text), tok.encode(text))
  # Overwriting an existing file works (os.replace onto it).
  CharTokenizer.from_text("xy").save(path)
  assert load_tokenizer(path).chars == "xy"


def test_load_tokenizer_errors(tmp_path):
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps({"kind": "bpe9000", "chars": "ab"}))
  with pytest.raises(UserError, match="unknown kind 'bpe9000'") as err:
    load_tokenizer(path)
  one_line(err)
  path.write_text("{not json")
  with pytest.raises(UserError, match="cannot read tokenizer file"):
    load_tokenizer(path)
  path.write_text(json.dumps({"kind": "char", "chars": "ba"}))
  with pytest.raises(UserError, match="corrupt"):
    load_tokenizer(path)
  with pytest.raises(UserError, match="no tokenizer file"):
    load_tokenizer(tmp_path / "missing.json")


# Window batches.


def test_batch_is_pure_function_of_seed_and_index():
  tokens = np.arange(10_000)
  a = WindowSampler(tokens, batch_size=8, seq_len=16, seed=3)
  b = WindowSampler(tokens, batch_size=8, seq_len=16, seed=3)
  # Out of order and repeated: no hidden iterator state.
  for index in (5, 0, 5, 123456):
    for key in ("inputs", "targets"):
      np.testing.assert_array_equal(a.batch(index)[key], b.batch(index)[key])
  assert not np.array_equal(a.batch(0)["inputs"], a.batch(1)["inputs"])
  other_seed = WindowSampler(tokens, batch_size=8, seq_len=16, seed=4)
  assert not np.array_equal(a.batch(0)["inputs"], other_seed.batch(0)["inputs"])


def test_targets_are_inputs_shifted_within_the_corpus():
  # Ids equal positions, so each row's first id is its window start.
  tokens = np.arange(500)
  sampler = WindowSampler(tokens, batch_size=32, seq_len=10, seed=0)
  batch = sampler.batch(7)
  for key in ("inputs", "targets"):
    assert batch[key].dtype == np.int32 and batch[key].shape == (32, 10)
  for row_in, row_tgt in zip(batch["inputs"], batch["targets"]):
    s = row_in[0]
    np.testing.assert_array_equal(row_in, tokens[s:s + 10])
    np.testing.assert_array_equal(row_tgt, tokens[s + 1:s + 11])


def test_windows_stay_in_bounds_and_reach_both_ends():
  seq_len = 4
  tokens = np.arange(12)
  sampler = WindowSampler(tokens, batch_size=64, seq_len=seq_len, seed=1)
  starts = np.concatenate([sampler.batch(i)["inputs"][:, 0] for i in range(10)])
  assert starts.min() == 0 and starts.max() == len(tokens) - seq_len - 1
  # A corpus of exactly one window has only one possible batch.
  exact = WindowSampler(np.arange(seq_len + 1), batch_size=3, seq_len=seq_len, seed=0)
  for i in range(5):
    batch = exact.batch(i)
    np.testing.assert_array_equal(batch["inputs"], np.tile(np.arange(4), (3, 1)))
    np.testing.assert_array_equal(batch["targets"], np.tile(np.arange(1, 5), (3, 1)))


def test_too_short_split_is_a_user_error():
  with pytest.raises(UserError) as err:
    WindowSampler(np.arange(8), batch_size=2, seq_len=8, seed=0,
                  split_name="validation")
  message = one_line(err)
  assert "validation split has 8 tokens" in message
  assert "seq_len+1 = 9" in message and "data.seq_len" in message
