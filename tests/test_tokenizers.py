"""Tests for the char, byte and SentencePiece tokenizers and their special ids."""

import json
import os
import pickle
import random

import ml_collections
import numpy as np
import pytest
import sentencepiece as spm

from jaxgen.data import tokenizer as tokenizer_lib
from jaxgen.data.tokenizer import (ByteTokenizer, CharTokenizer, SentencePieceTokenizer,
                                   build_tokenizer, load_tokenizer, train_sentencepiece)
from jaxgen.errors import UserError
from tests.helpers import SHARED_CORPUS, one_line

VOCAB = 400  # 4 special + 256 byte pieces + ~40 characters + learned pieces




def _corpus_lines(seed: int = 0, n: int = 300) -> list[str]:
  """Sentences of made-up words, each ending in a newline."""
  rng = random.Random(seed)
  syllables = ["ka", "to", "ri", "mu", "sen", "lo", "pa", "qu", "ex", "dor", "vi",
               "an", "th", "ing", "er", "ZZ", "7"]
  words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))
           for _ in range(150)]
  lines = []
  for _ in range(n):
    sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
    lines.append(sentence.capitalize() + rng.choice(".,;!?:") + "\n")
  return lines


@pytest.fixture(scope="module")
def lines() -> list[str]:
  return _corpus_lines()


@pytest.fixture(scope="module")
def sp(lines) -> SentencePieceTokenizer:
  return SentencePieceTokenizer.train(lines, VOCAB)


def _all_kinds(sp):
  return [CharTokenizer.from_text("hello, wörld 🙂\n"), ByteTokenizer(), sp]


# Encoding and decoding, against independent references.


def test_char_ids_follow_code_point_order_and_specials_come_after():
  text = "hello, wörld 🙂\n"
  tok = CharTokenizer.from_text(text)
  chars = sorted(set(text))
  n = len(chars)
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (n, n + 1, n + 2, n + 3)
  ids = tok.encode(text)
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [chars.index(c) for c in text])
  assert tok.decode(ids) == text
  # The JSON format is unchanged: chars only, specials implied.
  assert CharTokenizer("abc").vocab_size == 6


def test_byte_ids_are_utf8_bytes_plus_three():
  text = "Ünïcödé ✓ 🙂 \x00 end"
  tok = ByteTokenizer()
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.vocab_size) == (0, 1, 2, 259)
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.ndim == 1
  assert ids.tolist() == [b + 3 for b in text.encode("utf-8")]
  assert tok.decode(ids) == text
  assert tok.decode(ids.tolist()) == text
  assert tok.encode("").shape == (0,) and tok.decode([]) == ""
  # A truncated multi-byte character decodes as U+FFFD instead of failing.
  assert tok.decode(tok.encode("a🙂")[:-1]) == "a\ufffd"
  with pytest.raises(ValueError, match="id 259"):
    tok.decode([3, 259])


def test_byte_batch_encoding_equals_encoding_each_text():
  tok = ByteTokenizer()
  texts = ["", "ascii", "Ünïcödé ✓ 🙂", "\x00", "x" * 70_000]
  batch = tok.encode_batch(texts)
  assert [b.tolist() for b in batch] == [tok.encode(t).tolist() for t in texts]
  assert all(b.dtype == np.int32 for b in batch) and tok.encode_batch([]) == []
  # With an EOS after each text, in a store's dtype: what `data prepare` writes.
  ids, lengths = tok.encode_utf8([tok.utf8(t) for t in texts], np.uint16, eos=True)
  want = np.concatenate([np.append(tok.encode(t), tok.eos_id) for t in texts])
  assert ids.dtype == np.uint16 and ids.tolist() == want.tolist()
  assert lengths.tolist() == [len(t.encode()) + 1 for t in texts]
  with pytest.raises(UserError, match="position 1.*lone surrogates"):
    tok.encode_batch(["ok", "a\ud800"])


def test_sentencepiece_round_trip_matches_sentencepiece(sp, lines, tmp_path):
  text = "".join(lines[:20])
  ids = sp.encode(text)
  assert ids.dtype == np.int32 and ids.ndim == 1
  assert len(ids) < len(text) / 2  # learned pieces, not characters
  assert sp.decode(ids) == text
  # The same ids as a plain SentencePieceProcessor on the written .model file.
  sp.save_model(tmp_path / "m.model")
  reference = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
  assert ids.tolist() == reference.encode(text)
  # Exact round trip of spacing that NFKC normalization would have changed.
  odd = "  two  spaces\tand tab\r\n ﬁ ①"
  assert sp.decode(sp.encode(odd)) == odd


def test_sentencepiece_layout(sp):
  assert sp.vocab_size == VOCAB
  assert (sp.pad_id, sp.eos_id, sp.bos_id, sp.unk_id) == (0, 1, 2, 3)
  pieces = [sp._processor.id_to_piece(i) for i in range(4 + 256)]
  assert pieces[:4] == ["<pad>", "</s>", "<s>", "<unk>"]
  assert pieces[4:] == [f"<0x{b:02X}>" for b in range(256)]


def test_byte_fallback_encodes_unseen_characters(sp):
  unseen = "жé🙂"
  ids = sp.encode(unseen)
  expected = [sp._processor.piece_to_id(f"<0x{b:02X}>") for b in unseen.encode("utf-8")]
  assert ids.tolist() == expected
  assert sp.unk_id not in ids.tolist()
  assert sp.decode(ids) == unseen
  text = "Kato жé🙂 senlo"
  assert sp.decode(sp.encode(text)) == text


@pytest.mark.parametrize("kind", ["char", "byte", "sentencepiece"])
def test_special_ids_are_distinct_in_range_and_skipped(sp, kind):
  tok = dict(zip(["char", "byte", "sentencepiece"], _all_kinds(sp)))[kind]
  specials = [tok.pad_id, tok.bos_id, tok.eos_id]
  assert len(set(specials)) == 3
  assert all(0 <= i < tok.vocab_size for i in specials)
  text = "hello wörld"
  ids = tok.encode(text)
  assert not set(specials) & set(ids.tolist())  # encode adds no specials
  wrapped = [tok.bos_id, *ids.tolist(), tok.eos_id, tok.pad_id, tok.pad_id]
  assert tok.decode(wrapped) == text
  assert tok.decode(specials) == ""
  for i in specials:
    assert tok.decode([i]) == ""


# Saving and loading.


@pytest.mark.parametrize("kind", ["char", "byte", "sentencepiece"])
def test_save_load_round_trip(sp, tmp_path, kind):
  tok = dict(zip(["char", "byte", "sentencepiece"], _all_kinds(sp)))[kind]
  path = tmp_path / "tokenizer.json"
  tok.save(path)
  assert json.loads(path.read_text(encoding="utf-8"))["kind"] == kind
  assert os.listdir(tmp_path) == ["tokenizer.json"]  # no temp file left behind
  loaded = load_tokenizer(path)
  assert type(loaded) is type(tok) and loaded == tok
  assert loaded.vocab_size == tok.vocab_size
  text = "hello, wörld 🙂\n"
  np.testing.assert_array_equal(loaded.encode(text), tok.encode(text))
  assert loaded.decode(tok.encode(text)) == text
  # Data-loader workers receive tokenizers pickled.
  unpickled = pickle.loads(pickle.dumps(tok))
  assert unpickled == tok
  np.testing.assert_array_equal(unpickled.encode(text), tok.encode(text))


def test_sentencepiece_equality_is_by_model(lines, sp):
  other = SentencePieceTokenizer.train(lines[:200], VOCAB)
  assert other != sp and other.model_proto != sp.model_proto
  assert SentencePieceTokenizer(sp.model_proto) == sp
  assert hash(SentencePieceTokenizer(sp.model_proto)) == hash(sp)


def test_corrupt_sentencepiece_json(tmp_path):
  path = tmp_path / "tokenizer.json"
  path.write_text(json.dumps({"kind": "sentencepiece", "model": "not base64!"}))
  with pytest.raises(UserError, match="corrupt") as err:
    load_tokenizer(path)
  one_line(err)
  path.write_text(json.dumps({"kind": "sentencepiece", "model": "AAEC"}))
  with pytest.raises(UserError, match="not a SentencePiece model") as err:
    load_tokenizer(path)
  one_line(err)


def test_save_model_writes_raw_model_and_refuses_to_overwrite(sp, tmp_path):
  path = tmp_path / "sp.model"
  sp.save_model(path)
  assert path.read_bytes() == sp.model_proto
  assert SentencePieceTokenizer.load_model(path) == sp
  path.write_bytes(b"keep me")
  with pytest.raises(UserError, match="already exists") as err:
    sp.save_model(path)
  assert str(path) in one_line(err)
  assert path.read_bytes() == b"keep me"
  assert os.listdir(tmp_path) == ["sp.model"]


@pytest.mark.parametrize("content, expected", [
    (None, "no SentencePiece model at"),
    ("dir", "cannot read SentencePiece model"),
    (b"", "not a SentencePiece model"),
    (b"\x00\x01garbage\xff" * 10, "not a SentencePiece model"),
])
def test_load_model_errors(tmp_path, content, expected):
  path = tmp_path / "bad.model"
  if content == "dir":
    path.mkdir()
  elif content is not None:
    path.write_bytes(content)
  with pytest.raises(UserError, match=expected) as err:
    SentencePieceTokenizer.load_model(path)
  assert str(path) in one_line(err)


# Training.


def test_training_is_deterministic(lines, sp):
  again = SentencePieceTokenizer.train(list(lines), VOCAB)
  assert again.model_proto == sp.model_proto
  bpe_a = SentencePieceTokenizer.train(lines, VOCAB, model_type="bpe")
  bpe_b = SentencePieceTokenizer.train(iter(lines), VOCAB, model_type="bpe")
  assert bpe_a.model_proto == bpe_b.model_proto != sp.model_proto
  assert bpe_a.decode(bpe_a.encode(lines[0])) == lines[0]


def test_one_long_document_trains_like_its_lines(lines, sp):
  # Documents are fed line by line (as one sentence, the model differs).
  assert SentencePieceTokenizer.train(["".join(lines)], VOCAB) == sp
  # A line longer than max_sentence_length is fed in chunks, not dropped
  # (dropping it would leave nothing to train on).
  one_line = "".join(line.rstrip("\n") + " " for line in lines)
  assert len(one_line.encode("utf-8")) > 4 * 2048
  tok = SentencePieceTokenizer.train([one_line], VOCAB, max_sentence_length=2048)
  ids = tok.encode(one_line)
  assert len(ids) < len(one_line) / 2
  assert tok.decode(ids) == one_line


@pytest.mark.slow
def test_tiny_shakespeare_one_document():
  if not SHARED_CORPUS.exists():
    pytest.skip("needs ../shared/data/tiny_shakespeare/input.txt (the shared "
                "corpus); absent on this machine")
  text = SHARED_CORPUS.read_text(encoding="utf-8")
  # One 1 MB document: far over max_sentence_length if fed whole.
  tok = SentencePieceTokenizer.train([text], 1000)
  ids = tok.encode(text)
  assert len(ids) < len(text) / 2
  assert tok.decode(ids) == text


def test_too_large_vocab_size_names_the_limit(lines):
  with pytest.raises(UserError, match=r"at most \d+ pieces") as err:
    SentencePieceTokenizer.train(lines, 100_000)
  message = one_line(err)
  assert "--vocab_size=100000" in message and "lower --vocab_size" in message
  limit = int(message.split("at most ")[1].split()[0])
  # The limit is exact: it trains, and one more does not.
  assert SentencePieceTokenizer.train(lines, limit).vocab_size == limit
  with pytest.raises(UserError, match=f"at most {limit} pieces"):
    SentencePieceTokenizer.train(lines, limit + 1)


def test_training_error_messages_are_parsed():
  # The exact text sentencepiece 0.2.x raises.
  high = ("INTERNAL: src/trainer_interface.cc(744) [(trainer_spec_.vocab_size()) == "
          "(model_proto->pieces_size())] Vocabulary size too high (434). "
          "Please set it to a value <= 433.")
  assert tokenizer_lib._training_error(high, 434) == (
      "--vocab_size=434 is too large: the training corpus supports at most 433 "
      "pieces; lower --vocab_size")
  low = ("INTERNAL: src/trainer_interface.cc(638) [(static_cast<int>(required_chars_.size() "
         "+ meta_pieces_.size())) <= (trainer_spec_.vocab_size())] Vocabulary size is "
         "smaller than required_chars. 200 vs 305. Increase vocab_size or decrease "
         "character_coverage with --character_coverage option.")
  assert "at least 305 pieces" in tokenizer_lib._training_error(low, 200)
  other = "INTERNAL: src/trainer_interface.cc(467) [!sentences_.empty()] odd\nthing"
  assert tokenizer_lib._training_error(other, 9) == "SentencePiece training failed: odd thing"
  bare = "INTERNAL: src/trainer_interface.cc(467) [!sentences_.empty()] "
  assert tokenizer_lib._training_error(bare, 9) == (
      "SentencePiece training failed: [!sentences_.empty()]")


def test_too_small_vocab_size_and_bad_arguments(lines):
  with pytest.raises(UserError, match=r"too small: .* at least \d+ pieces") as err:
    SentencePieceTokenizer.train(lines, 100)
  one_line(err)
  with pytest.raises(UserError, match="corpus is empty"):
    SentencePieceTokenizer.train(["", ""], VOCAB)
  with pytest.raises(UserError, match="'unigram' or 'bpe'"):
    SentencePieceTokenizer.train(lines, VOCAB, model_type="word")
  with pytest.raises(UserError, match="positive"):
    SentencePieceTokenizer.train(lines, 0)


def test_train_sentencepiece_writes_model_once(lines, sp, tmp_path):
  path = tmp_path / "new" / "dir" / "sp.model"
  tok = train_sentencepiece(lines, VOCAB, path)
  assert tok == sp and path.read_bytes() == sp.model_proto

  def never_read():
    raise AssertionError("trained although the output exists")
    yield

  with pytest.raises(UserError, match="already exists") as err:
    train_sentencepiece(never_read(), VOCAB, path)
  one_line(err)
  assert path.read_bytes() == sp.model_proto


# The factory.


def _data_cfg(tokenizer: str, tokenizer_path: str | None = None):
  cfg = ml_collections.ConfigDict({"tokenizer": tokenizer})
  if tokenizer_path is not None:
    cfg.tokenizer_path = tokenizer_path
  return cfg


def _unused():
  raise AssertionError("train_texts called without need")


def test_build_tokenizer(sp, tmp_path):
  tok = build_tokenizer(_data_cfg("char"), lambda: iter(["ba", "c\n"]))
  assert tok == CharTokenizer("\nabc")
  assert build_tokenizer(_data_cfg("byte"), _unused) == ByteTokenizer()
  sp.save_model(tmp_path / "sp.model")
  sp.save(tmp_path / "tokenizer.json")
  for name in ("sp.model", "tokenizer.json"):
    got = build_tokenizer(_data_cfg("sentencepiece", str(tmp_path / name)), _unused)
    assert got == sp


def test_a_char_vocabulary_above_256_symbols_hints_byte_or_a_trained_tokenizer(
    monkeypatch, capsys):
  from jaxgen import messages
  monkeypatch.setattr(messages, "_said", set())
  symbols = "".join(map(chr, range(0x4E00, 0x4E00 + 6_200)))  # a CJK or code corpus
  assert build_tokenizer(_data_cfg("char"), lambda: [symbols[:256]]).vocab_size == 259
  assert capsys.readouterr().err == ""  # no more than the byte vocabulary: nothing said
  assert build_tokenizer(_data_cfg("char"), lambda: [symbols]).vocab_size == 6_203
  err = capsys.readouterr().err
  assert err.startswith("jaxgen: hint: data.tokenizer='char' found 6,200 distinct symbols "
                        "in the corpus: a vocabulary of 6,203,") and err.count("\n") == 1
  assert "data.tokenizer='byte' needs 259" in err and "jaxgen tokenizer train" in err
  # Said by process 0 only: every process of a job builds the same vocabulary.
  monkeypatch.setattr(messages, "_said", set())
  import jax
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  build_tokenizer(_data_cfg("char"), lambda: [symbols])
  assert capsys.readouterr().err == ""


def test_build_tokenizer_errors(tmp_path):
  for cfg in (_data_cfg("sentencepiece"), _data_cfg("sentencepiece", "")):
    with pytest.raises(UserError, match="jaxgen tokenizer train") as err:
      build_tokenizer(cfg, _unused)
    assert "data.tokenizer_path" in one_line(err)
  with pytest.raises(UserError, match="no SentencePiece model at"):
    build_tokenizer(_data_cfg("sentencepiece", str(tmp_path / "missing.model")), _unused)
  ByteTokenizer().save(tmp_path / "tokenizer.json")
  with pytest.raises(UserError, match="ByteTokenizer, not a SentencePiece"):
    build_tokenizer(_data_cfg("sentencepiece", str(tmp_path / "tokenizer.json")), _unused)
  with pytest.raises(UserError, match="'byte', 'char', 'sentencepiece'") as err:
    build_tokenizer(_data_cfg("bpe"), _unused)
  assert "'bpe'" in one_line(err)
