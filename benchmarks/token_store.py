"""The token store, measured: prints one JSON line.

  python benchmarks/token_store.py --what=prepare --mb=20      # vs the tokenizers' own rate
  python benchmarks/token_store.py --what=prepare --mb=200 --tokenizers=byte,sentencepiece
  python benchmarks/token_store.py --what=memory --mb=200,2000 # prepare's peak RSS
  python benchmarks/token_store.py --what=input --mb=100       # batches/s from a store
  python benchmarks/token_store.py --what=startup --mb=20,2000 # first batch, fresh process
  python benchmarks/token_store.py --what=lazy --mb=200,2000    # pack over raw jsonl, no store

The corpora are made here from this Python's standard-library sources (one
document per .py file, copies told apart by a marker line), as jsonl under
--dir; nothing is downloaded. Tokenizers: byte; a SentencePiece model (8k
pieces) and a byte-level BPE tokenizer.json (32k) trained here on the first
10 MB.

prepare: `jaxgen data prepare --workers=N` tokens/s (its --json summary)
against the tokenizer library's own batch call on the same documents held in
memory on the same cores (HF: `encode_batch`, all threads; SentencePiece:
`encode(list, num_threads=N)`; byte: `ByteTokenizer.encode` in N processes).
memory: the peak RSS of the prepare (its largest process) per corpus size.
input: tokens/s of 32 x 1024 batches (windows, pack) from a byte store, beside
the in-memory path on the same documents (its tokenization not timed).
startup: a fresh process's time to its first 32 x 1024 batch from a byte store
(imports included; after_imports_s: the part after them) and its peak RSS, median of
--repeats runs per store size and mode, taken in rounds over the sizes and modes
(--cold: the store's pages dropped from the page cache before each run).
lazy: pack mode straight from the raw jsonl, larger than data.max_in_memory_mb
(64 here): a fresh process's time to index it, to its first 32 x 1024 batch, its
peak RSS, and the pack tokens/s that follow (byte tokenizer, hashed split).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import resource
import subprocess
import sys
import sysconfig
import time

import numpy as np
from absl import app, flags

_WHAT = flags.DEFINE_enum("what", "prepare", ["prepare", "memory", "input", "startup", "lazy"],
                          "What to measure.")
_MB = flags.DEFINE_string("mb", "20", "Corpus size(s) in MB, comma-separated.")
_DIR = flags.DEFINE_string("dir", "/tmp/jaxgen_store_bench", "Where corpora and stores go.")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Prepare's workers.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "input: seconds per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "startup: fresh processes per size and mode.")
_COLD = flags.DEFINE_bool("cold", False, "startup: drop the store's pages from the page "
                          "cache before each run (a host that has not read it yet).")
_TOKENIZERS = flags.DEFINE_list("tokenizers", ["byte", "sentencepiece", "hf"],
                                "prepare: the tokenizers to measure.")
_REPO = pathlib.Path(__file__).resolve().parents[1]


def corpus(mb: int) -> pathlib.Path:
  out = pathlib.Path(_DIR.value) / f"stdlib_{mb}mb.jsonl"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  texts = []
  for p in sorted(root.rglob("*.py")):
    if "site-packages" in p.parts:
      continue
    try:
      texts.append(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError):
      pass
  written, copy = 0, 0
  tmp = out.with_suffix(".tmp")
  with open(tmp, "w") as f:
    while written < mb << 20:
      for text in texts:
        line = json.dumps({"text": f"# copy {copy}\n{text}"}) + "\n"
        f.write(line)
        written += len(line)
        if written >= mb << 20:
          break
      copy += 1
  os.replace(tmp, out)
  return out


def documents(path: pathlib.Path) -> list[str]:
  with open(path) as f:
    return [json.loads(line)["text"] for line in f]


def tokenizers(path: pathlib.Path) -> dict[str, list[str]]:
  """data.* overrides per tokenizer, the trained ones made once from the first 10 MB."""
  base = pathlib.Path(_DIR.value)
  sp, hf = base / "sp8k.model", base / "bpe32k"
  sample = documents(corpus(10))
  if not sp.exists():
    from jaxgen.data.tokenizer import train_sentencepiece
    train_sentencepiece(sample, 8192, sp, input_sentence_size=200_000)
  if not (hf / "tokenizer.json").exists():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sample, trainers.BpeTrainer(
        vocab_size=32768, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.mkdir(parents=True, exist_ok=True)
    tok.save(str(hf / "tokenizer.json"))
    (hf / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
  return {"byte": ["--config.data.tokenizer=byte"],
          "sentencepiece": ["--config.data.tokenizer=sentencepiece",
                            f"--config.data.tokenizer_path={sp}"],
          "hf": ["--config.data.tokenizer=hf", f"--config.data.tokenizer_path={hf}"]}


def prepare(path: pathlib.Path, flags_: list[str], out: pathlib.Path) -> tuple[dict, float]:
  """Runs the prepare; returns its summary and its largest process's peak RSS (MB)."""
  import shutil
  shutil.rmtree(out, ignore_errors=True)
  before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  done = subprocess.run(
      [sys.executable, "-m", "jaxgen", "data", "prepare",
       "--config=configs/shakespeare_char_cpu.py", f"--config.data.source=jsonl:{path}",
       "--config.data.max_in_memory_mb=1000000", *flags_, f"--out={out}",
       f"--workers={_WORKERS.value}", "--json"],
      cwd=_REPO, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  if done.returncode:
    raise SystemExit(done.stderr)
  rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return json.loads(done.stdout.strip().splitlines()[-1]), max(rss, before) / 1024


def _encode_chunk(texts: list[str]) -> int:
  from jaxgen.data.tokenizer import ByteTokenizer
  tok = ByteTokenizer()
  return sum(len(tok.encode(t)) for t in texts)


def library_rate(name: str, flags_: list[str], docs: list[str]) -> float:
  """Tokens/s of the tokenizer library's own batch call on `docs` (eos not counted)."""
  workers = _WORKERS.value
  if name == "byte":
    chunks = [docs[i::workers * 8] for i in range(workers * 8)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      pool.map(_encode_chunk, chunks[:workers])  # start-up not timed
      start = time.perf_counter()
      n = sum(pool.map(_encode_chunk, chunks))
    return n / (time.perf_counter() - start)
  path = flags_[1].split("=", 1)[1]
  if name == "sentencepiece":
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=path)
    start = time.perf_counter()
    n = sum(len(x) for x in sp.encode(docs, out_type=int, num_threads=workers))
    return n / (time.perf_counter() - start)
  from tokenizers import Tokenizer
  tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
  start = time.perf_counter()
  n = sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
  return n / (time.perf_counter() - start)


def measure_prepare(mb: int) -> dict:
  path = corpus(mb)
  docs = documents(path)
  out = {}
  for name, flags_ in tokenizers(path).items():
    if name not in _TOKENIZERS.value:
      continue
    summary, _ = prepare(path, flags_, pathlib.Path(_DIR.value) / f"store_{name}")
    lib = library_rate(name, flags_, docs)
    tokens = summary["tokens"] - summary["documents"]  # the eos after each document
    out[name] = {"prepare_tokens_per_s": round(tokens / summary["seconds"]),
                 "library_tokens_per_s": round(lib),
                 "ratio": round(tokens / summary["seconds"] / lib, 3)}
  return out


def measure_memory(sizes: list[int]) -> dict:
  out = {}
  for mb in sizes:
    summary, rss = prepare(corpus(mb), ["--config.data.tokenizer=byte"],
                           pathlib.Path(_DIR.value) / f"store_mem_{mb}")
    out[f"{mb}mb"] = {"peak_rss_mb": round(rss), "seconds": summary["seconds"],
                      "tokens": summary["tokens"], "tokens_per_s": summary["tokens_per_s"]}
  return out


def _rate(ds, seconds: float) -> float:
  it = iter(ds)
  next(it)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    n += int(np.asarray(next(it)["inputs"]).size)
  return n / (time.perf_counter() - start)


def measure_input(mb: int) -> dict:
  import ml_collections
  from jaxgen import config as config_lib
  from jaxgen.data import sources
  from jaxgen.data.pipeline import make_dataset
  from jaxgen.data.tokenizer import ByteTokenizer
  path = corpus(mb)
  store = pathlib.Path(_DIR.value) / f"store_input_{mb}"
  if not (store / "manifest.json").exists():
    prepare(path, ["--config.data.tokenizer=byte"], store)
  cfg = config_lib.base_config()
  cfg.data.update(source=f"store:{store}", tokenizer="byte")
  stored = sources.documents(cfg.data, "train")
  memory = documents(path)
  tok = ByteTokenizer()
  out = {}
  for mode in ("windows", "pack"):
    for name, docs in (("store", stored), ("memory", memory)):
      ds = make_dataset(docs, tok, seq_len=1024, batch_size=32, mode=mode, seed=0)
      out[f"{mode}_{name}_tokens_per_s"] = round(_rate(ds, _SECONDS.value))
  del ml_collections
  return out


_FIRST_BATCH = """
import json, resource, sys, time
t0 = time.perf_counter()
from jaxgen import config
from jaxgen.data import sources
from jaxgen.data.pipeline import make_dataset
from jaxgen.data.tokenizer import build_tokenizer
t1 = time.perf_counter()
cfg = config.base_config()
cfg.data.update(source="store:" + sys.argv[1], tokenizer="byte")
docs = sources.documents(cfg.data, "train")
ds = make_dataset(docs, build_tokenizer(cfg.data, lambda: ()), seq_len=1024, batch_size=32,
                  mode=sys.argv[2], seed=0)
next(iter(ds))
print(json.dumps([time.perf_counter() - t0,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  time.perf_counter() - t1]))
"""


def evict(directory: pathlib.Path) -> None:
  """Drops a directory's files from the page cache (clean pages; no root needed)."""
  for path in directory.rglob("*"):
    if path.is_file():
      fd = os.open(path, os.O_RDONLY)
      try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
      finally:
        os.close(fd)


def measure_startup(sizes: list[int]) -> dict:
  stores = {}
  for mb in sizes:
    stores[mb] = pathlib.Path(_DIR.value) / f"store_input_{mb}"
    if not (stores[mb] / "manifest.json").exists():
      prepare(corpus(mb), ["--config.data.tokenizer=byte"], stores[mb])
  # Rounds over every size and mode in turn: on a shared machine a burst of load then
  # falls on all of them instead of on one size's runs.
  runs: dict[str, list] = {f"{mb}mb_{mode}": [] for mb in sizes for mode in ("windows", "pack")}
  for _ in range(_REPEATS.value):
    for mb in sizes:
      for mode in ("windows", "pack"):
        if _COLD.value:
          evict(stores[mb])
        runs[f"{mb}mb_{mode}"].append(json.loads(subprocess.run(
            [sys.executable, "-c", _FIRST_BATCH, str(stores[mb]), mode], cwd=_REPO,
            capture_output=True, text=True, check=True).stdout))
  median = lambda rs, i: float(np.median([r[i] for r in rs]))
  return {k: {"first_batch_s": round(median(rs, 0), 3), "peak_rss_mb": round(median(rs, 1)),
              "after_imports_s": round(median(rs, 2), 3),
              "first_batch_s_range": [round(min(r[0] for r in rs), 2),
                                      round(max(r[0] for r in rs), 2)]}
          for k, rs in runs.items()}


_LAZY = """
import json, resource, sys, time
t0 = time.perf_counter()
from jaxgen import config
from jaxgen.data import sources
from jaxgen.data.pipeline import make_dataset
from jaxgen.data.tokenizer import ByteTokenizer
d = config.base_config().data
d.update(source="jsonl:" + sys.argv[1], mode="pack", tokenizer="byte", doc_split="hashed",
         max_in_memory_mb=64)
docs = sources.documents(d, "train")
indexed = time.perf_counter() - t0
it = iter(make_dataset(docs, ByteTokenizer(), seq_len=1024, batch_size=32, mode="pack", seed=0))
next(it)
first = time.perf_counter() - t0
n, start = 0, time.perf_counter()
while time.perf_counter() - start < float(sys.argv[2]):
  n += int(next(it)["weights"].sum())
rate = n / (time.perf_counter() - start)
it.close()
print(json.dumps([type(docs).__name__, len(docs), indexed, first,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rate]))
"""


def measure_lazy(sizes: list[int]) -> dict:
  out = {}
  for mb in sizes:
    path = corpus(mb)
    kind, docs, indexed, first, rss, rate = json.loads(subprocess.run(
        [sys.executable, "-c", _LAZY, str(path), str(_SECONDS.value)], cwd=_REPO, capture_output=True, text=True,
        check=True).stdout)
    out[f"{mb}mb"] = {"documents": docs, "reader": kind, "index_s": round(indexed, 2),
                      "first_batch_s": round(first, 2), "peak_rss_mb": round(rss),
                      "pack_real_tokens_per_s": round(rate)}
  return out


def main(argv):
  del argv
  sizes = [int(x) for x in _MB.value.split(",")]
  cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
              if l.startswith("model name")), "?")
  result = {"what": _WHAT.value, "cpu": cpu, "cores": os.cpu_count(),
            "workers": _WORKERS.value, "corpus_mb": sizes}
  if _WHAT.value == "prepare":
    result.update(measure_prepare(sizes[0]))
  elif _WHAT.value == "memory":
    result.update(measure_memory(sizes))
  elif _WHAT.value == "startup":
    result.update(measure_startup(sizes))
  elif _WHAT.value == "lazy":
    result.update(measure_lazy(sizes))
  else:
    result.update(measure_input(sizes[0]))
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
