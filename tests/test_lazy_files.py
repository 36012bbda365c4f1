"""Pack mode over a local source larger than data.max_in_memory_mb: read lazily, the same
documents and batches as the in-memory path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxgen import config as config_lib
from jaxgen.data import lazy_files, sources
from jaxgen.data.pipeline import make_dataset
from jaxgen.data.tokenizer import ByteTokenizer
from jaxgen.errors import UserError

MB = 2**20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """About 1.3 MB of jsonl in two files: documents of many sizes, some repeated, one with
  non-ASCII text (characters, not bytes, are what the split counts)."""
  rng = np.random.default_rng(0)
  words = ["alpha", "beta", "gamma", "delta", "épsilon", "zeta", "ηta", "theta"]
  docs = [" ".join(rng.choice(words, size=int(rng.integers(5, 420)))) for _ in range(900)]
  docs += docs[:40]  # identical documents fall on the same side of the split
  root = tmp_path_factory.mktemp("lazy")
  for k, part in enumerate((docs[:500], docs[500:])):
    with open(root / f"part{k}.jsonl", "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(part))
  total = sum((root / f"part{k}.jsonl").stat().st_size for k in range(2))
  assert MB < total < 2 * MB
  return f"jsonl:{root}/part*.jsonl"


def _cfg(source: str, limit_mb: int, rule: str):
  d = config_lib.base_config().data
  d.update(source=source, mode="pack", tokenizer="byte", doc_split=rule,
           max_in_memory_mb=limit_mb)
  return d


def _take(dataset, n: int, state=None) -> tuple[list, dict]:
  """The first `n` batches of `dataset` (from `state`, if given) and the state after them."""
  it = iter(dataset)
  if state is not None:
    it.set_state(state)
  out = [next(it) for _ in range(n)]
  final = it.get_state()
  it.close()
  return out, final


@pytest.mark.parametrize("rule", ["hashed", "tail"])
def test_lazy_documents_are_the_in_memory_ones(corpus, rule):
  lazy = {s: sources.documents(_cfg(corpus, 1, rule), s) for s in sources.SPLITS}
  memory = {s: sources.documents(_cfg(corpus, 512, rule), s) for s in sources.SPLITS}
  assert isinstance(lazy["train"], lazy_files.LazyDocuments)
  assert not isinstance(memory["train"], lazy_files.LazyDocuments)
  for split in sources.SPLITS:
    assert len(lazy[split]) == len(memory[split]) > 0
    assert list(lazy[split]) == list(memory[split])
    assert lazy[split].doc_split == memory[split].doc_split == rule


def test_lazy_pack_gives_the_in_memory_batches_and_resumes(corpus):
  tok = ByteTokenizer()
  def batches(limit_mb, state=None, n=6, shard=(0, 1)):
    docs = sources.documents(_cfg(corpus, limit_mb, "hashed"), "train")
    return _take(make_dataset(docs, tok, seq_len=64, batch_size=8, mode="pack", seed=3,
                              shard_index=shard[0], shard_count=shard[1]), n, state)
  memory, _ = batches(512)
  lazy, _ = batches(1)
  for a, b in zip(memory, lazy):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  _, state = batches(1, n=3)
  resumed, _ = batches(1, state=json.loads(json.dumps(state)), n=3)
  for a, b in zip(memory[3:], resumed):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  host1 = batches(512, n=2, shard=(1, 2))[0]
  for a, b in zip(host1, batches(1, n=2, shard=(1, 2))[0]):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_windows_and_compressed_and_one_document_are_refused(corpus, tmp_path):
  d = _cfg(corpus, 1, "hashed")
  d.mode = "windows"
  with pytest.raises(UserError, match="data.mode='pack' reads it lazily") as e:
    sources.documents(d, "train")
  assert "jaxgen data prepare" in str(e.value) and "\n" not in str(e.value)
  import gzip
  big = "x " * (MB // 2 + 10)
  with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:  # small on disk, but over the limit
    f.write(json.dumps({"text": big}) + "\n" + json.dumps({"text": big}) + "\n")
  (tmp_path / "pad.jsonl").write_text(json.dumps({"text": big}) + "\n")
  with pytest.raises(UserError, match="compressed"):
    sources.documents(_cfg(f"jsonl:{tmp_path}/*.jsonl*", 1, "hashed"), "train")
  (tmp_path / "one.txt").write_text("word " * (MB // 4))
  with pytest.raises(UserError, match="one document"):
    sources.documents(_cfg(f"text:{tmp_path}/one.txt", 1, "hashed"), "train")


@pytest.fixture(scope="module")
def pair_corpus(tmp_path_factory):
  """About 1.2 MB of tsv pairs in two files: repeated sources and targets (the hashed
  split keeps them on one side), and lines holding two pairs split at a \\r (as
  str.splitlines splits them in memory)."""
  rng = np.random.default_rng(1)
  words = ["haus", "baum", "wald", "straße", "fluss", "berg", "see", "dorf"]
  lines = []
  for i in range(9000):
    source = " ".join(rng.choice(words, size=int(rng.integers(2, 24))))
    target = source.upper() if i % 7 else "REPEATED TARGET"
    lines.append(f"{source}\t{target}")
  for i in range(0, len(lines) - 1, 97):
    lines[i] = lines[i] + "\r" + lines[i + 1]
  root = tmp_path_factory.mktemp("lazy_pairs")
  for k, part in enumerate((lines[:4000], lines[4000:])):
    (root / f"part{k}.tsv").write_text("\n".join(part) + "\n", encoding="utf-8")
  total = sum((root / f"part{k}.tsv").stat().st_size for k in range(2))
  assert MB < total < 2 * MB
  return f"tsv:{root}/part*.tsv"


def _pair_cfg(source: str, limit_mb: int, rule: str):
  d = _cfg(source, limit_mb, "tail")
  d.update(pair_split=rule, source_len=32, seq_len=32)
  return d


@pytest.mark.parametrize("rule", ["hashed", "tail"])
def test_lazy_pairs_are_the_in_memory_ones_and_pack_alike(pair_corpus, rule):
  from jaxgen.data import pairs
  lazy = pairs.train_and_eval(_pair_cfg(pair_corpus, 1, rule))
  memory = pairs.train_and_eval(_pair_cfg(pair_corpus, 512, rule))
  assert isinstance(lazy[0], lazy_files.LazyPairs)
  assert not isinstance(memory[0], lazy_files.LazyPairs)
  for a, b in zip(lazy, memory):
    assert len(a) == len(b) > 0
    assert list(a) == list(b)
  assert sum(map(len, memory)) == 9000 + len(range(0, 8999, 97))  # the \r lines hold two

  def batches(items, state=None, n=4):
    return _take(pairs.make_pair_dataset(items, ByteTokenizer(), source_len=32, target_len=32,
                                         batch_size=8, seed=5, pack=True), n, state)
  want, _ = batches(memory[0])
  got, _ = batches(lazy[0])
  for a, b in zip(want, got):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  _, state = batches(lazy[0], n=2)
  resumed, _ = batches(lazy[0], state=json.loads(json.dumps(state)), n=2)
  for a, b in zip(want[2:], resumed):
    np.testing.assert_array_equal(a["source"], b["source"])
    np.testing.assert_array_equal(a["targets"], b["targets"])


def test_large_pairs_outside_pack_mode_are_refused(pair_corpus):
  from jaxgen.data import pairs
  d = _pair_cfg(pair_corpus, 1, "hashed")
  d.mode = "windows"
  with pytest.raises(UserError, match="data.mode='pack' reads it lazily") as e:
    pairs.train_and_eval(d)
  assert "jaxgen data prepare" in str(e.value) and "\n" not in str(e.value)
