"""Tests for jaxgen.data.sources: text/jsonl/tfds documents, splits, prepare, errors."""

import json
import pathlib
import pickle
import time
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import tensorflow_datasets as tfds  # a required dependency: failing to import fails the suite

from jaxgen.data import bundled, readers
from jaxgen.data.sources import documents, prepare
from jaxgen.data.tokenizer import CharTokenizer
from jaxgen.errors import UserError
from tests.helpers import SHARED_CORPUS, needs_tf, one_line, write_corpus



def nanogpt_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
  """nanoGPT's split, written out: the first (1 - val_fraction) of the characters train."""
  n = int(len(text) * (1.0 - val_fraction))
  return text[:n], text[n:]


def _cfg(source, **keys):
  return ml_collections.ConfigDict({"source": source, **keys})




def _split(cfg):
  return list(documents(cfg, "train")), list(documents(cfg, "eval"))


# text: and jsonl: documents and splits.


def test_one_file_splits_at_characters(tmp_path):
  text = "ROMEO:\nO, she doth ü!\n"
  assert len(text) == 22  # int(22 * 0.9) = 19 characters train, int(22 * 0.5) = 11
  (tmp_path / "c.txt").write_text(text, encoding="utf-8")
  assert _split(_cfg(f"text:{tmp_path}/c.txt")) == (["ROMEO:\nO, she doth "], ["ü!\n"])
  assert _split(_cfg(f"text:{tmp_path}/c.txt", val_fraction=0.5)) == ([text[:11]], [text[11:]])
  assert _split(_cfg(f"text:{tmp_path}/c.txt", val_fraction=0.0)) == ([text], [])


def test_one_file_char_split_equals_nanogpt_split(tmp_path):
  source = write_corpus(tmp_path / "verse.txt", repeats=7)
  text = (tmp_path / "verse.txt").read_text(encoding="utf-8")
  for val_fraction in (0.1, 0.25):
    (train,), (val,) = _split(_cfg(source, val_fraction=val_fraction))
    assert (train, val) == nanogpt_split(text, val_fraction)


def test_bundled_tiny_shakespeare_is_tfds_file_split_as_tfds_splits_it():
  text = bundled.read("tiny_shakespeare")
  assert len(text) == 1_115_394 and text.startswith("First Citizen:\n")
  assert len(CharTokenizer.from_text(text).chars) == 65
  # The checksum TFDS registers for the file its builder downloads.
  checksums = (pathlib.Path(tfds.__file__).parent / "datasets/tiny_shakespeare/checksums.tsv")
  assert bundled.CORPORA["tiny_shakespeare"].sha256 in checksums.read_text()
  cfg = _cfg("bundled:tiny_shakespeare")
  train, val = documents(cfg, "train"), documents(cfg, "eval")
  assert (len(train), len(val)) == (1, 1)
  assert (len(train[0]), len(val[0])) == (1_003_854, 55_770)
  cfg.eval_split = "test"
  test = documents(cfg, "eval")[0]
  assert train[0] + val[0] + test == text
  if SHARED_CORPUS.exists():  # the same bytes as the corpus the project keeps
    assert SHARED_CORPUS.read_text(encoding="utf-8") == text
  assert prepare(_cfg("bundled:tiny_shakespeare")) == {
      "train": {"documents": 1, "characters": 1_003_854},
      "eval": {"documents": 1, "characters": 55_770}}


def test_bundled_corpus_errors(tmp_path, monkeypatch):
  with pytest.raises(UserError, match="no split 'valid'.*train, validation, test") as err:
    documents(_cfg("bundled:tiny_shakespeare", eval_split="valid"), "eval")
  assert "data.eval_split" in one_line(err)
  with pytest.raises(UserError, match="no such bundled corpus; jaxgen ships tiny_shakespeare"):
    documents(_cfg("bundled:wikitext"), "train")
  # One changed byte in the shipped file is caught by its checksum.
  altered = tmp_path / "tiny_shakespeare" / "input.txt"
  altered.parent.mkdir()
  raw = bytearray((bundled.ROOT / "tiny_shakespeare/input.txt").read_bytes())
  raw[1000] ^= 1
  altered.write_bytes(bytes(raw))
  monkeypatch.setattr(bundled, "ROOT", tmp_path)
  bundled.read.cache_clear()
  try:
    with pytest.raises(UserError, match="altered .SHA-256 mismatch.; reinstall jaxgen") as err:
      documents(_cfg("bundled:tiny_shakespeare"), "train")
    one_line(err)
  finally:
    bundled.read.cache_clear()


def test_shakespeare_char_split_equals_nanogpt_split():
  if not SHARED_CORPUS.exists():
    pytest.skip("needs ../shared/data/tiny_shakespeare/input.txt (the shared corpus); "
                "absent on this machine")
  text = SHARED_CORPUS.read_text(encoding="utf-8")
  (train,), (val,) = _split(_cfg(f"text:{SHARED_CORPUS}"))
  assert (len(train), len(val)) == (1_003_854, 111_540)
  assert (train, val) == nanogpt_split(text)


def test_relative_and_home_paths(tmp_path, monkeypatch):
  (tmp_path / "corpus.txt").write_text("héllo wörld\n" * 3, encoding="utf-8")
  monkeypatch.chdir(tmp_path)
  want = _split(_cfg(f"text:{tmp_path}/corpus.txt"))
  assert _split(_cfg("text:corpus.txt")) == want
  monkeypatch.setenv("HOME", str(tmp_path))
  assert _split(_cfg("text:~/corpus.txt")) == want


def test_glob_sorts_files_and_splits_by_documents(tmp_path):
  for name in ("d", "a", "c", "e", "b"):
    (tmp_path / f"{name}.txt").write_text(f"doc {name}\n", encoding="utf-8")
  (tmp_path / "notes.md").write_text("not matched\n")
  # 5 documents, val_fraction 0.3: ceil(1.5) = 2 evaluate, the last two by name.
  train, val = _split(_cfg(f"text:{tmp_path}/*.txt", val_fraction=0.3))
  assert train == ["doc a\n", "doc b\n", "doc c\n"]
  assert val == ["doc d\n", "doc e\n"]
  # Relative glob with ~ and ** (recursive).
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "z.txt").write_text("doc z\n")
  train, val = _split(_cfg(f"text:{tmp_path}/**/*.txt", val_fraction=0.1))
  assert len(train) == 5 and val == ["doc z\n"]  # ceil(0.6) = 1


def test_text_lines_documents_and_float_noise_in_the_split(tmp_path):
  (tmp_path / "a.txt").write_text("first\n\n   \nsecond\r\n", encoding="utf-8")
  (tmp_path / "b.txt").write_text("".join(f"line {i}\n" for i in range(23)))
  train, val = _split(_cfg(f"text:{tmp_path}/*.txt", text_lines=True, val_fraction=0.28))
  # 25 documents; 0.28 * 25 is 7.000000000000001 in floats, still 7 documents.
  assert train == ["first", "second"] + [f"line {i}" for i in range(16)]
  assert val == [f"line {i}" for i in range(16, 23)]


def test_jsonl_documents(tmp_path):
  rows = [{"body": "héllo", "id": 1}, {"body": "two\nlines", "id": 2}, {"body": "c"}]
  (tmp_path / "1.jsonl").write_text(
      json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
  (tmp_path / "2.jsonl").write_text(json.dumps(rows[2], ensure_ascii=False))
  cfg = _cfg(f"jsonl:{tmp_path}/*.jsonl", text_key="body", val_fraction=0.2)
  assert _split(cfg) == (["héllo", "two\nlines"], ["c"])
  # One record is one document: split at characters like a single text file.
  single = tmp_path / "one.jsonl"
  single.write_text(json.dumps({"text": "abcdefghij"}) + "\n")
  assert _split(_cfg(f"jsonl:{single}")) == (["abcdefghi"], ["j"])


def _hashed(source, **keys):
  return _cfg(source, doc_split="hashed", **keys)


def test_hashed_split_holds_out_val_fraction_of_characters_whatever_the_sizes(tmp_path):
  """The issue's notes: the last file held out whole was 95% of the text. Hashed, whole
  documents go out in hash order and the one that passes val_fraction is cut there."""
  (tmp_path / "notes1.txt").write_text("a" * 1_146)
  (tmp_path / "notes2.txt").write_text("b" * 22_920)
  source = f"text:{tmp_path}/notes*.txt"
  train, val = _split(_hashed(source))
  total = 24_066
  assert sum(map(len, val)) == total - int(total * 0.9) == 2_407  # nanoGPT's count
  assert sorted(train + val) == sorted(["a" * 1_146, "b" * 21_659, "b" * 1_261])
  assert documents(_hashed(source), "eval").doc_split == "hashed"
  # Independent of the files' names and order; identical documents stay together.
  (tmp_path / "notes1.txt").rename(tmp_path / "notes3.txt")
  assert sorted(_split(_hashed(source))[1]) == sorted(val)
  lines = [f"line {i % 40}" for i in range(200)]  # each line five times
  (tmp_path / "lines.txt").write_text("\n".join(lines))
  train, val = _split(_hashed(f"text:{tmp_path}/lines.txt", text_lines=True))
  assert not set(train) & set(val) and 0 < len(val) < 40
  # One document, or no validation: as before, and data.doc_split does not matter.
  text = (tmp_path / "notes2.txt").read_text()
  assert _split(_hashed(f"text:{tmp_path}/notes2.txt")) == tuple(map(list, zip(
      nanogpt_split(text))))
  assert documents(_hashed(f"text:{tmp_path}/notes2.txt"), "train").doc_split is None
  assert _split(_hashed(source, val_fraction=0.0)) == (["b" * 22_920, "a" * 1_146], [])
  with pytest.raises(UserError, match="data.doc_split='bogus' is not a split"):
    documents(_cfg(source, doc_split="bogus"), "train")


def test_validation_over_twice_val_fraction_is_one_warning_line(tmp_path, capsys):
  (tmp_path / "notes1.txt").write_text("a" * 1_146)
  (tmp_path / "notes2.txt").write_text("b" * 22_920)
  source = f"text:{tmp_path}/notes*.txt"
  # Configs without data.doc_split (saved by an older jaxgen) keep the tail split.
  assert _split(_cfg(source)) == (["a" * 1_146], ["b" * 22_920])
  assert capsys.readouterr().err == (
      f"jaxgen: warning: data.source {source!r} holds out 22,920 of its 24,066 characters "
      "(95%) for validation, more than twice data.val_fraction=0.1: data.doc_split='tail' "
      "holds out whole documents from the end (1 of 2) whatever their sizes; "
      "data.doc_split='hashed' holds out val_fraction of the characters\n")
  assert documents(_cfg(source), "train").doc_split == "tail"  # said once per process
  _split(_hashed(source))
  _split(_cfg(source, val_fraction=0.5))  # 95% is not more than twice 50%
  assert capsys.readouterr().err == ""


def test_prepare_counts_local_splits(tmp_path):
  for i, text in enumerate(["aa", "bbb", "cccc", "ddddd"]):
    (tmp_path / f"{i}.txt").write_text(text)
  sizes = prepare(_cfg(f"text:{tmp_path}/*.txt", val_fraction=0.5))
  assert sizes == {"train": {"documents": 2, "characters": 5},
                   "eval": {"documents": 2, "characters": 9}}


def test_data_prepare_counts_one_as_one(tmp_path, capsys):
  from jaxgen import commands
  (tmp_path / "c.txt").write_text("abcdefghij")
  source = f"text:{tmp_path}/c.txt"
  commands.data_prepare(ml_collections.ConfigDict({"data": {
      "source": source, "train_split": "train", "eval_split": "validation"}}))
  assert capsys.readouterr().out.splitlines() == [
      f"{source} train (train): 1 document, 9 characters",
      f"{source} eval (validation): 1 document, 1 character"]


def test_documents_sequence_protocol(tmp_path):
  for i in range(3):
    (tmp_path / f"{i}.txt").write_text(f"d{i}")
  docs = documents(_cfg(f"text:{tmp_path}/*.txt", val_fraction=0.0), "train")
  assert len(docs) == 3 and docs[np.int64(1)] == "d1" and docs[-1] == "d2"
  assert docs[1:] == ["d1", "d2"] and list(docs) == ["d0", "d1", "d2"]
  with pytest.raises(IndexError):
    docs[3]
  assert "documents=3" in repr(docs) and len(repr(docs)) < 200
  assert list(pickle.loads(pickle.dumps(docs))) == ["d0", "d1", "d2"]
  with pytest.raises(ValueError, match="split"):
    documents(_cfg(f"text:{tmp_path}/*.txt"), "validation")


def test_importing_sources_imports_neither_tfds_nor_grain():
  code = ("import sys, jaxgen.data.sources; "
          "print(sorted(m for m in ('tensorflow_datasets', 'grain', 'tensorflow') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "[]"


# Bad local input: one line naming the path.


@pytest.mark.parametrize("content, expected", [
    (None, "does not exist"),
    ("dir", "is a directory"),
    (b"", "empty"),
    (b" \n\t\n", "empty"),
    (b"ab\xff", "not valid UTF-8"),
])
@pytest.mark.parametrize("scheme", ["text", "jsonl"])
def test_bad_file(tmp_path, scheme, content, expected):
  path = tmp_path / "corpus"
  if content == "dir":
    path.mkdir()
  elif content is not None:
    path.write_bytes(content)
  with pytest.raises(UserError, match=expected) as err:
    documents(_cfg(f"{scheme}:{path}"), "train")
  assert str(path) in one_line(err)


def test_bad_file_inside_a_glob_is_named(tmp_path):
  (tmp_path / "a.txt").write_text("fine\n")
  (tmp_path / "b.txt").write_bytes("héllo".encode() + b"ab\xff")
  with pytest.raises(UserError, match=r"byte offset 8\).*iconv") as err:
    prepare(_cfg(f"text:{tmp_path}/*.txt"))
  assert str(tmp_path / "b.txt") in one_line(err)
  (tmp_path / "b.txt").unlink()
  (tmp_path / "c").mkdir()
  with pytest.raises(UserError, match="is a directory") as err:
    documents(_cfg(f"text:{tmp_path}/*"), "train")
  assert str(tmp_path / "c") in one_line(err)


def test_glob_matching_nothing(tmp_path):
  with pytest.raises(UserError, match="matches no file") as err:
    documents(_cfg(f"text:{tmp_path}/*.txt"), "train")
  assert f"{tmp_path}/*.txt" in one_line(err)


def test_unreadable_file(tmp_path, monkeypatch):
  path = tmp_path / "locked.txt"
  path.write_text("secret\n")
  def deny(*args, **kwargs):  # chmod does not stop root, which runs CI here
    raise PermissionError(13, "Permission denied", str(path))
  monkeypatch.setattr(readers, "open", deny, raising=False)
  with pytest.raises(UserError, match="cannot read.*Permission denied") as err:
    documents(_cfg(f"text:{path}"), "train")
  assert str(path) in one_line(err)


@pytest.mark.parametrize("line, expected", [
    ('{"text": "ok"', r"c\.jsonl:2 is not JSON .*one object per line with a 'text' field"),
    ('{"body": "x", "id": 3}', r"c\.jsonl:2 has no key 'text' \(keys: 'body', 'id'\)"),
    ('["text"]', r"c\.jsonl:2 has no key 'text' \(it is a JSON array\)"),
    ('{"text": 7}', r"c\.jsonl:2: 'text' is a JSON number, not a string"),
    ('{"text": null}', r"c\.jsonl:2: 'text' is a JSON null"),
])
def test_bad_jsonl_line(tmp_path, line, expected):
  path = tmp_path / "c.jsonl"
  path.write_text('{"text": "fine"}\n' + line + "\n")
  with pytest.raises(UserError, match=expected) as err:
    documents(_cfg(f"jsonl:{path}"), "eval")
  assert str(path) in one_line(err)


@pytest.mark.parametrize("source, expected", [
    ("corpus.txt", "no known scheme; use one of bundled:NAME, text:PATH_OR_GLOB, "
                   "jsonl:PATH_OR_GLOB, tfds:NAME"),
    ("txt:a", "no known scheme"),
    ("text:", "names nothing; use text:PATH_OR_GLOB"),
    ("tfds:", r"names nothing; use tfds:NAME\[:VERSION\]"),
])
def test_bad_source_string(source, expected):
  with pytest.raises(UserError, match=expected) as err:
    documents(_cfg(source), "train")
  assert repr(source) in one_line(err)


def test_splits_that_leave_nothing(tmp_path):
  (tmp_path / "a.txt").write_text("a")
  (tmp_path / "b.txt").write_text("b")
  with pytest.raises(UserError, match="2 documents.*none to train"):
    documents(_cfg(f"text:{tmp_path}/*.txt", val_fraction=0.6), "train")  # ceil(1.2) = 2
  with pytest.raises(UserError, match="val_fraction is 1.0"):
    documents(_cfg(f"text:{tmp_path}/*.txt", val_fraction=1.0), "train")
  with pytest.raises(UserError, match="one document of 1 character,") as err:
    documents(_cfg(f"text:{tmp_path}/a.txt"), "eval")  # int(0.9) = 0 train characters
  assert "a.txt" in one_line(err)


# tfds: a mocked data set, a real one built here, and tiny_shakespeare offline.


def test_tfds_mocked_text_key_and_split_names(tmp_path, no_network):
  asked = []

  def as_data_source(self, split, **kwargs):
    asked.append(split)
    return [{"text": f"{split} {i} é".encode()} for i in range(3)]

  cfg = _cfg("tfds:tiny_shakespeare", tfds_data_dir=str(tmp_path))
  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    train = documents(cfg, "train")
    assert list(train) == ["train 0 é", "train 1 é", "train 2 é"]
    assert list(documents(cfg, "eval")) == ["validation 0 é", "validation 1 é",
                                            "validation 2 é"]
    cfg.eval_split = "test"
    assert documents(cfg, "eval")[2] == "test 2 é"
    assert asked == ["train", "validation", "test"]
    cfg.text_key = "content"
    with pytest.raises(UserError, match="no feature 'content' \\(features: text\\)") as err:
      documents(cfg, "train")
    assert "data.text_key" in one_line(err)


_TOY_BUILDER = []


def _toy_builder_name(tfds) -> str:
  """A small real TFDS builder (registered once per session): text, title and a label."""
  if not _TOY_BUILDER:
    class JaxgenTestDocs(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "body": tfds.features.Text(), "title": tfds.features.Text(),
            "label": tfds.features.Scalar(dtype=np.int64)}))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(["alpha", "béta", "gamma"]),
                "validation": self._generate_examples(["delta"])}

      def _generate_examples(self, texts):
        for i, text in enumerate(texts):
          yield i, {"body": text, "title": f"t{i}", "label": i}

    _TOY_BUILDER.append(JaxgenTestDocs.name)
  return _TOY_BUILDER[0]


@needs_tf
def test_tfds_real_builder_reads_array_record_lazily(tmp_path, no_network):
  cfg = _cfg(f"tfds:{_toy_builder_name(tfds)}", tfds_data_dir=str(tmp_path),
             text_key="body")
  sizes = prepare(cfg)
  assert sizes == {"train": {"documents": 3, "characters": 14},
                   "eval": {"documents": 1, "characters": 5}}
  assert list((tmp_path / "jaxgen_test_docs" / "1.0.0").glob("*.array_record*"))
  train = documents(cfg, "train")
  # Which record is which depends on TFDS's shuffle of the keys: compare as sets.
  assert sorted(train) == ["alpha", "béta", "gamma"]
  assert type(train._items).__name__ == "ArrayRecordDataSource"  # read on demand
  cfg.text_key = "title"
  assert sorted(documents(cfg, "eval")) == ["t0"]
  cfg.train_split = "train[:2]"
  assert len(documents(cfg, "train")) == 2


@needs_tf
@pytest.mark.parametrize("keys, expected", [
    (dict(eval_split="valid"), r"Unknown split 'valid'.*data\.eval_split.*train, validation"),
    (dict(train_split="train[:10%]"), r"split 'train\[:10%\]' \(data\.train_split\) has no "
                                       "examples"),
    (dict(text_key="label"), r"feature 'label' is Scalar, not text.*body, title"),
    (dict(text_key="text"), r"no feature 'text' \(features: body, title, label\)"),
])
def test_tfds_bad_split_or_key(tmp_path, no_network, keys, expected):
  cfg = _cfg(f"tfds:{_toy_builder_name(tfds)}", tfds_data_dir=str(tmp_path),
             **{"text_key": "body", **keys})
  split = "eval" if "eval_split" in keys else "train"
  with pytest.raises(UserError, match=expected) as err:
    documents(cfg, split)
  assert "jaxgen_test_docs" in one_line(err)


@needs_tf
def test_tfds_prepared_as_tfrecord_is_refused(tmp_path, no_network):
  name = _toy_builder_name(tfds)
  tfds.builder(name, data_dir=str(tmp_path)).download_and_prepare()  # tfds.load's format
  with pytest.raises(UserError, match="as tfrecord, which has no random access") as err:
    documents(_cfg(f"tfds:{name}", tfds_data_dir=str(tmp_path), text_key="body"), "train")
  assert str(tmp_path) in one_line(err) and "array_record" in str(err.value)


@pytest.mark.parametrize("source, expected", [
    ("tfds:tiny_shakespear", "no data set 'tiny_shakespear'; did you mean tiny_shakespeare"),
    ("tfds:tiny_shakespeare:9.9.9", "cannot be loaded at version 9.9.9, only: 1.0.0"),
])
def test_tfds_bad_name(tmp_path, no_network, source, expected):
  with pytest.raises(UserError, match=expected) as err:
    documents(_cfg(source, tfds_data_dir=str(tmp_path)), "train")
  assert source in one_line(err)


@needs_tf
def test_tfds_wrong_manual_file_fails_its_checksum(tmp_path, no_network):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "input.txt").write_text("not Shakespeare\n")
  cfg = _cfg("tfds:tiny_shakespeare", tfds_data_dir=str(tmp_path / "data"),
             tfds_manual_dir=str(manual))
  with pytest.raises(UserError, match="wrong checksum") as err:
    documents(cfg, "train")
  assert str(manual) in one_line(err)
  cfg.tfds_manual_dir = str(tmp_path / "missing")
  with pytest.raises(UserError, match="tfds_manual_dir .*missing is not a directory"):
    documents(cfg, "train")


@needs_tf
def test_tfds_tiny_shakespeare_prepares_offline_from_the_bundled_file(tmp_path, no_network):
  cfg = _cfg("tfds:tiny_shakespeare", tfds_data_dir=str(tmp_path))  # no tfds_manual_dir
  text = bundled.read("tiny_shakespeare")
  # The builder's split: the first 90% train; of the rest, the first half validation.
  n_train = int(len(text) * 0.9)
  n_val = int((len(text) - n_train) * 0.5)
  assert prepare(cfg) == {"train": {"documents": 1, "characters": n_train},
                          "eval": {"documents": 1, "characters": n_val}}
  assert (n_train, n_val) == (1_003_854, 55_770)
  train = documents(cfg, "train")
  assert train[0] == text[:n_train]
  assert pickle.loads(pickle.dumps(train))[0] == text[:n_train]  # for Grain workers
  assert documents(cfg, "eval")[0] == text[n_train:n_train + n_val]
  # The bundled source reads the same three texts without TFDS.
  for split in ("validation", "test"):
    cfg.eval_split = split
    assert documents(cfg, "eval")[0] == documents(
        _cfg("bundled:tiny_shakespeare", eval_split=split), "eval")[0]
  assert text[n_train + n_val:] == documents(cfg, "eval")[0]


def test_offline_download_fails_fast_in_one_line(tmp_path, offline, monkeypatch):
  # Without the bundled copy, tiny_shakespeare would have to be downloaded.
  monkeypatch.setattr(bundled, "manual_dir", lambda name: None)
  cfg = _cfg("tfds:tiny_shakespeare", tfds_data_dir=str(tmp_path / "data"))
  start = time.monotonic()
  with pytest.raises(UserError) as err:
    documents(cfg, "train")
  assert time.monotonic() - start < 15
  line = one_line(err)
  assert "raw.githubusercontent.com, which cannot be reached" in line
  assert "put input.txt in data.tfds_manual_dir" in line and "jaxgen data prepare" in line
