"""The token store: `jaxgen data prepare --out` against online tokenization."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from jaxgen import config as config_lib
from jaxgen.data import pairs, sources, store as store_lib, store_prepare
from jaxgen.data.pipeline import make_dataset
from jaxgen.data.tokenizer import build_tokenizer
from jaxgen.errors import UserError

_WORDS = ("the of and to in is was for on that with as by at from his her it an be "
          "king queen lord love death night day sword crown blood fair sweet").split()


def _doc(rng: random.Random, n: int) -> str:
  return " ".join(rng.choice(_WORDS) for _ in range(n)) + rng.choice(".!?")


def _jsonl_corpus(directory: pathlib.Path, files: int = 3, docs: int = 60) -> str:
  rng = random.Random(0)
  directory.mkdir(parents=True, exist_ok=True)
  texts = []
  for f in range(files):
    lines = []
    for _ in range(docs):
      text = _doc(rng, rng.randint(3, 40))
      if rng.random() < 0.1 and texts:
        text = rng.choice(texts)  # duplicates: the hashed split keeps copies together
      texts.append(text)
      lines.append(json.dumps({"text": text, "id": len(texts)}))
    body = ("\n".join(lines) + "\n").encode()
    if f == 1:
      (directory / f"part{f}.jsonl.gz").write_bytes(gzip.compress(body))
    elif f == 2:
      import zstandard
      (directory / f"part{f}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    else:
      (directory / f"part{f}.jsonl").write_bytes(body)
  return f"jsonl:{directory}/part*"


def _cfg(source: str, **data) -> ml_collections.ConfigDict:
  cfg = config_lib.base_config()
  cfg.data.source = source
  cfg.data.tokenizer = data.pop("tokenizer", "byte")
  for k, v in data.items():
    cfg.data[k] = v
  return cfg


def _prepare(cfg, out, **kw) -> dict:
  kw.setdefault("workers", 1)
  kw.setdefault("unit_mb", 0.002)  # units of ~2 KB: several shards from a small corpus
  return store_prepare.prepare(cfg, str(out), as_json=True, command="jaxgen data prepare "
                               "--test", **kw)


def _store_cfg(cfg, out) -> ml_collections.ConfigDict:
  stored = ml_collections.ConfigDict(cfg.to_dict())
  stored.data.source = f"store:{out}"
  return stored


def _batches(cfg, split: str, mode: str, n: int = 4, **kw):
  d = cfg.data
  docs = sources.documents(d, split)
  tok = build_tokenizer(d, lambda: itertools.chain(sources.documents(d, "train"),
                                                   sources.documents(d, "eval")))
  ds = make_dataset(docs, tok, seq_len=16, batch_size=4, mode=mode, seed=3, prefetch=0, **kw)
  return list(itertools.islice(iter(ds), n))


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def jsonl_store(tmp_path_factory):
  base = tmp_path_factory.mktemp("store")
  cfg = _cfg(_jsonl_corpus(base / "corpus"))
  summary = _prepare(cfg, base / "store")
  return cfg, base / "store", summary


@pytest.mark.parametrize("mode", ["windows", "concat", "pack"])
def test_store_batches_equal_online_batches(jsonl_store, mode):
  cfg, out, summary = jsonl_store
  assert summary["units"] > 3  # several shards, the .gz and .zst files among them
  stored = _store_cfg(cfg, out)
  for split in ("train", "eval"):
    online = sources.documents(cfg.data, split)
    assert len(sources.documents(stored.data, split)) == len(online)
    _same(_batches(stored, split, mode), _batches(cfg, split, mode))
  # Another host's share too (concat and pack shard the documents).
  _same(_batches(stored, "train", mode, shard_index=1, shard_count=2),
        _batches(cfg, "train", mode, shard_index=1, shard_count=2))


@pytest.mark.parametrize("source", ["one", "lines_tail"])
def test_store_splits_as_online(tmp_path, source):
  rng = random.Random(1)
  text = "\n".join(_doc(rng, rng.randint(2, 30)) for _ in range(200)) + "\n"
  (tmp_path / "a.txt").write_text(text)
  (tmp_path / "b.txt").write_text(text[::-1])
  if source == "one":  # one document: nanoGPT's cut, its head and tail tokenized apart
    cfg = _cfg(f"text:{tmp_path}/a.txt", tokenizer="char")
  else:
    cfg = _cfg(f"text:{tmp_path}/*.txt", text_lines=True, doc_split="tail")
  _prepare(cfg, tmp_path / "store")
  stored = _store_cfg(cfg, tmp_path / "store")
  for split in ("train", "eval"):
    _same(_batches(stored, split, "pack"), _batches(cfg, split, "pack"))
    _same(_batches(stored, split, "windows"), _batches(cfg, split, "windows"))


def _pair_file(path: pathlib.Path) -> None:
  rng = random.Random(2)
  lines = []
  for i in range(300):
    src = _doc(rng, rng.randint(1, 8)) if i % 7 else "shared source"
    lines.append(f"{src}\t{_doc(rng, rng.randint(1, 8))}")
  path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("pack", [False, True])
def test_store_pairs_equal_online_pairs(tmp_path, pack):
  _pair_file(tmp_path / "pairs.tsv")
  cfg = _cfg(f"tsv:{tmp_path}/pairs.tsv", pair_split="hashed")
  _prepare(cfg, tmp_path / "store")
  stored = _store_cfg(cfg, tmp_path / "store")
  assert pairs.is_paired(stored.data)
  tok = build_tokenizer(cfg.data, lambda: ())
  for split in ("train", "eval"):
    online = pairs.pairs(cfg.data, split)
    mine = pairs.pairs(stored.data, split)
    assert len(mine) == len(online)
    assert pairs.decode_examples(mine, 5, tok) == list(online[:5])
    kw = dict(tokenizer=tok, source_len=12, target_len=10, batch_size=4, seed=1, prefetch=0,
              pack=pack)
    a = list(itertools.islice(iter(pairs.make_pair_dataset(mine, **kw)), 3))
    b = list(itertools.islice(iter(pairs.make_pair_dataset(online, **kw)), 3))
    _same(a, b)


def _files(directory: pathlib.Path) -> dict:
  return {str(p.relative_to(directory)): p.read_bytes()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def test_two_hosts_then_finalize_equal_one_host(jsonl_store, tmp_path):
  cfg, out, _ = jsonl_store
  for h in range(2):
    summary = _prepare(cfg, tmp_path / "two", num_hosts=2, host_index=h, workers=2)
    assert "splits" not in summary  # not readable before --finalize
  assert not (tmp_path / "two" / "manifest.json").exists()
  _prepare(cfg, tmp_path / "two", finalize=True)
  assert _files(tmp_path / "two") == _files(out)


def test_killed_prepare_resumes_to_the_same_store(jsonl_store, tmp_path):
  cfg, out, _ = jsonl_store
  target = tmp_path / "killed"
  script = (f"import sys, ml_collections; sys.path.insert(0, {str(pathlib.Path.cwd())!r});"
            "from jaxgen.data import store_prepare;"
            f"cfg = ml_collections.ConfigDict({cfg.to_dict()!r});"
            f"store_prepare.prepare(cfg, {str(target)!r}, workers=1, unit_mb=0.002, "
            "as_json=True, command='jaxgen data prepare --test')")
  env = dict(os.environ, JAXGEN_PREPARE_DELAY_S="0.05")
  proc = subprocess.Popen([sys.executable, "-c", script], env=env)
  deadline = time.time() + 60
  while not list((target / "shards").glob("00002.json")) and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (target / "manifest.json").exists()
  with pytest.raises(UserError, match="incomplete"):
    store_lib.Store(target)
  summary = _prepare(cfg, target)
  assert summary["units_kept"] >= 3 and summary["units_prepared"] >= 1
  assert _files(target) == _files(out)


def test_damaged_stores_are_refused_in_one_line(jsonl_store, tmp_path):
  import shutil
  _, out, _ = jsonl_store
  copy = tmp_path / "copy"
  shutil.copytree(out, copy)
  store_lib.Store(copy).verify()
  shard = sorted((copy / "shards").glob("*.tokens.bin"))[1]
  data = bytearray(shard.read_bytes())
  data[3] ^= 0xFF
  shard.write_bytes(bytes(data))
  with pytest.raises(UserError, match=f"{shard}.*fails its checksum.*jaxgen data prepare"):
    store_lib.Store(copy).verify()
  shard.write_bytes(bytes(data[:-2]))
  with pytest.raises(UserError, match=f"{shard} has .* bytes.*truncated.*jaxgen data prepare"):
    store_lib.Store(copy)
  shard.unlink()
  with pytest.raises(UserError, match="missing shards/.*jaxgen data prepare"):
    store_lib.Store(copy)


def test_store_refuses_another_tokenizer(jsonl_store):
  cfg, out, _ = jsonl_store
  stored = _store_cfg(cfg, out)
  stored.data.tokenizer = "char"
  with pytest.raises(UserError, match="tokenized with ByteTokenizer.*data.tokenizer='byte'"):
    build_tokenizer(stored.data, lambda: ())


def test_prepare_refuses_another_source_in_the_same_directory(jsonl_store, tmp_path):
  cfg, out, _ = jsonl_store
  (tmp_path / "x.txt").write_text("hello there, a short text\n" * 50)
  with pytest.raises(UserError, match="holds the store of another source"):
    _prepare(_cfg(f"text:{tmp_path}/x.txt"), out)


@pytest.mark.slow
def test_training_from_a_store_equals_training_online(jsonl_store, tmp_path):
  """The same losses step for step: the store feeds the batches online tokenization does."""
  from jaxgen.train.loop import train_and_evaluate
  from tests.helpers import tiny_transformer_config
  cfg, out, _ = jsonl_store
  losses = []
  for source in (cfg.data.source, f"store:{out}"):
    c = tiny_transformer_config(source, steps=4, log_every=1, batch_size=8)
    c.data.update(tokenizer="byte", mode="pack")
    c.eval.update(every_steps=4, steps=1)
    workdir = tmp_path / source.split(":")[0]
    final = train_and_evaluate(c, str(workdir))
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses.append([r["train_loss"] for r in rows if "train_loss" in r] + [final["val_loss"]])
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


@pytest.mark.slow
def test_resume_refuses_a_store_rebuilt_under_its_path(jsonl_store, tmp_path):
  """Same path, tokenizer and model, other records: only the manifest's hash, kept in the
  checkpoint, tells. The same store prepared again (byte-identical) still resumes."""
  import shutil
  from jaxgen.train.loop import train_and_evaluate
  from tests.helpers import tiny_transformer_config
  cfg, _, _ = jsonl_store
  out, workdir = tmp_path / "store", tmp_path / "run"
  _prepare(cfg, out)
  c = tiny_transformer_config(f"store:{out}", steps=2, batch_size=8)
  c.data.update(tokenizer="byte", mode="pack")
  c.eval.update(every_steps=0)
  train_and_evaluate(c, str(workdir))
  shutil.rmtree(out)
  _prepare(_cfg(_jsonl_corpus(tmp_path / "other", files=1, docs=30)), out)
  c.train.steps = 4
  with pytest.raises(UserError, match=f"token store {out} is not the one the checkpoints"):
    train_and_evaluate(c, str(workdir))
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]
  shutil.rmtree(out)
  _prepare(cfg, out)
  assert train_and_evaluate(c, str(workdir))["step"] == 4


@pytest.mark.slow
def test_prepare_command_and_inspect(tmp_path):
  from tests.helpers import run_jaxgen
  source = _jsonl_corpus(tmp_path / "c", files=1, docs=40)
  config = "--config=configs/shakespeare_char_cpu.py"
  common = (config, f"--config.data.source={source}", "--config.data.tokenizer=byte")
  done = run_jaxgen("data", "prepare", *common, f"--out={tmp_path}/s", "--json")
  assert done.returncode == 0, done.stderr
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  assert summary["documents"] == 40 and summary["tokens"] > 40 and summary["bytes"] > 0
  shown = run_jaxgen("data", "inspect", config, f"--config.data.source=store:{tmp_path}/s",
                     "--config.data.tokenizer=byte", "--num_batches=1")
  assert shown.returncode == 0, shown.stderr
  assert "every checksum verified" in shown.stdout and "=== batch 0 ===" in shown.stdout
  (tmp_path / "s" / "manifest.json").unlink()
  refused = run_jaxgen("data", "inspect", config, f"--config.data.source=store:{tmp_path}/s",
                       "--config.data.tokenizer=byte")
  lines = refused.stderr.strip().splitlines()
  assert refused.returncode == 1 and len(lines) == 1, refused.stderr
  assert "incomplete" in lines[0] and f"--out={tmp_path}/s" in lines[0]


def test_lines_cut_from_reads_equal_readline_for_every_range(tmp_path, monkeypatch):
  from jaxgen.data import readers
  path = tmp_path / "lines.txt"
  path.write_bytes(b"a\n\nbcdefghijklmnop\nq\nrstuvwxyz0123456789\n\n\nlast, no newline")
  size = path.stat().st_size

  def by_readline(start, end):
    with open(path, "rb") as f:
      f.seek(max(start - 1, 0))
      offset = start - 1 + len(f.readline()) if start else 0
      f.seek(offset)
      while end is None or offset < end:
        line = f.readline()
        if not line:
          return
        yield offset, line
        offset += len(line)

  for read_bytes in (1, 3, 7, 1 << 18):  # lines longer and shorter than a read
    monkeypatch.setattr(readers, "_READ_BYTES", read_bytes)
    for start in range(size + 1):
      for end in [*range(start, size + 2), None]:
        got = list(readers._lines(str(path), start, end))
        assert got == list(by_readline(start, end)), (read_bytes, start, end)


def test_host_from_env(monkeypatch):
  monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
  monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
  monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
  assert store_prepare.host_from_env(None, None) == (3, 1)
  monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
  monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
  assert store_prepare.host_from_env(4, None) == (4, 2)
  with pytest.raises(UserError, match="outside"):
    store_prepare.host_from_env(2, None)


def test_a_raw_source_over_max_in_memory_mb_is_refused_with_the_prepare_command(tmp_path):
  (tmp_path / "big.txt").write_text("a line of text to make the file big\n" * 32_000)
  cfg = _cfg(f"text:{tmp_path}/*.txt", max_in_memory_mb=1)
  with pytest.raises(UserError, match="1 MB, more than data.max_in_memory_mb=1 .*jaxgen "
                     "data prepare --config=... --out=DIR"):
    sources.documents(cfg.data, "train")
  cfg.data.max_in_memory_mb = 2
  assert len(sources.documents(cfg.data, "train")) == 1
  summary = _prepare(_cfg(f"text:{tmp_path}/*.txt", max_in_memory_mb=1), tmp_path / "s",
                     unit_mb=64)
  assert summary["documents"] == 1  # prepare streams: the limit is not its
