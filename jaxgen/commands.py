"""`jaxgen data prepare|inspect` and `jaxgen tokenizer train`: data work before a run."""

from __future__ import annotations

import json
import pathlib

import ml_collections

from jaxgen import tasks
from jaxgen.data import sources
from jaxgen.data.tokenizer import train_sentencepiece
from jaxgen.errors import UserError
from jaxgen.messages import count


def data_prepare(cfg: ml_collections.ConfigDict) -> dict:
  """Readies `data.source` (downloads and prepares TFDS data sets) and prints its sizes."""
  if cfg.data.get("mixture", ""):  # each component, as if it were data.source
    from jaxgen.data import mixture
    return {c.name: data_prepare(ml_collections.ConfigDict({**cfg.to_dict(),
                                                            "data": mixture.component_cfg(
                                                                cfg.data, c).to_dict()}))
            for c in mixture.parse(cfg.data.mixture)}
  return tasks.task_of(cfg.data).sizes(cfg)


def data_inspect(cfg: ml_collections.ConfigDict, num_batches: int) -> None:
  """Prints the first training batches decoded: what the model will be fed."""
  d = cfg.data
  if sources.parse_source(d.source)[0] == "store" and not d.get("mixture", ""):
    from jaxgen.data.store import open_store
    store = open_store(sources.parse_source(d.source)[1])
    checked = store.verify()
    m = store.manifest
    print(f"{d.source}: a token store (task {m['task']!r}) of {m['source']!r} ({count(len(m['shards']), 'shard')}, "
          f"{checked / 2**20:,.1f} MB, every checksum verified); splits: "
          + ", ".join(f"{k} {count(v['records'], 'record')} / {count(v['tokens'], 'token')}"
                      for k, v in m["splits"].items()), flush=True)
  tasks.task_of(d).inspect(cfg, num_batches)


def tokenizer_train(cfg: ml_collections.ConfigDict, vocab_size: int) -> pathlib.Path:
  """Trains a SentencePiece model on the training split (both sides of paired data)
  into `data.tokenizer_path`."""
  d = cfg.data
  if not d.tokenizer_path:
    raise UserError("data.tokenizer_path is empty: set where the SentencePiece model goes, "
                    "e.g. --config.data.tokenizer_path=tokenizers/shakespeare_1k.model")
  path = pathlib.Path(d.tokenizer_path).expanduser()
  if path.exists():
    raise UserError(f"{path} already exists; remove it or choose another "
                    "data.tokenizer_path (nothing is overwritten)")
  if vocab_size < 1:
    raise UserError(f"--vocab_size={vocab_size} must be positive")
  tokenizer = train_sentencepiece(tasks.task_of(d).tokenizer_texts(cfg), vocab_size, path)
  print(json.dumps({"tokenizer": str(path), "vocab_size": tokenizer.vocab_size}), flush=True)
  return path
