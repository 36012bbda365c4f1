"""`jaxgen data prepare|inspect` and `jaxgen tokenizer train`: data work before a run."""

from __future__ import annotations

import itertools
import json
import pathlib

import ml_collections

from jaxgen.data import sources
from jaxgen.data.tokenizer import build_tokenizer, train_sentencepiece
from jaxgen.errors import UserError
from jaxgen.messages import count


def data_prepare(cfg: ml_collections.ConfigDict) -> dict:
  """Readies `data.source` (downloads and prepares TFDS data sets) and prints its sizes."""
  from jaxgen.data import pairs
  if cfg.data.get("mixture", ""):  # each component, as if it were data.source
    from jaxgen.data import mixture
    return {c.name: data_prepare(ml_collections.ConfigDict({**cfg.to_dict(),
                                                            "data": mixture.component_cfg(
                                                                cfg.data, c).to_dict()}))
            for c in mixture.parse(cfg.data.mixture)}
  if pairs.is_paired(cfg.data):
    sizes = {}
    for split in ("train", "eval"):
      items = pairs.pairs(cfg.data, split)
      sizes[split] = {"pairs": len(items)}
      print(f"{cfg.data.source} {split}: {count(len(items), 'pair')}", flush=True)
    return sizes
  sizes = sources.prepare(cfg.data)
  if sources.parse_source(cfg.data.source)[0] == "store":
    for split, s in sizes.items():
      print(f"{cfg.data.source} {split}: {count(s['documents'], 'document')}, "
            f"{count(s['tokens'], 'token')} (eos included)", flush=True)
    return sizes
  for split, s in sizes.items():
    name = cfg.data.train_split if split == "train" else cfg.data.eval_split
    print(f"{cfg.data.source} {split} ({name}): {count(s['documents'], 'document')}, "
          f"{count(s['characters'], 'character')}", flush=True)
  return sizes


def data_inspect(cfg: ml_collections.ConfigDict, num_batches: int) -> None:
  """Prints the first training batches decoded: what the model will be fed."""
  from jaxgen.data.pipeline import describe, make_dataset  # Grain only here
  d = cfg.data
  from jaxgen.data import pairs
  if sources.parse_source(d.source)[0] == "store":
    from jaxgen.data.store import open_store
    store = open_store(sources.parse_source(d.source)[1])
    checked = store.verify()
    m = store.manifest
    print(f"{d.source}: a token store (task {m['task']!r}) of {m['source']!r} ({count(len(m['shards']), 'shard')}, "
          f"{checked / 2**20:,.1f} MB, every checksum verified); splits: "
          + ", ".join(f"{k} {count(v['records'], 'record')} / {count(v['tokens'], 'token')}"
                      for k, v in m["splits"].items()), flush=True)
  if pairs.is_paired(d):
    train = pairs.pairs(d, "train")
    tokenizer = build_tokenizer(d, lambda: pairs.vocabulary_texts(train, pairs.pairs(d, "eval")))
    print(f"{d.source}: {count(len(train), 'training pair')}, tokenizer {tokenizer!r}",
          flush=True)
    dataset = pairs.make_pair_dataset(train, tokenizer, source_len=d.source_len or d.seq_len,
                                      target_len=d.seq_len, batch_size=cfg.train.batch_size,
                                      seed=cfg.train.seed, shuffle=d.shuffle, prefetch=0,
                                      pack=d.mode == "pack")
    for i, batch in enumerate(itertools.islice(iter(dataset), max(1, num_batches))):
      print(f"=== batch {i} ===", flush=True)
      for b in range(len(batch["source"])):
        source_ids, target_ids = batch["source_segment_ids"][b], batch["segment_ids"][b]
        for n in sorted(set(target_ids[target_ids != 0].tolist())):  # one pair per segment
          src = batch["source"][b][source_ids == n]
          tgt = batch["targets"][b][(target_ids == n) & (batch["weights"][b] != 0)]
          row = f"row {b}.{n}: " if d.mode == "pack" else ""
          print(f"{row}{tokenizer.decode(src)!r} -> {tokenizer.decode(tgt)!r} ({len(src)} "
                f"-> {count(len(tgt), 'token')}, eos included)", flush=True)
    return
  if d.get("mixture", ""):
    _inspect_mixture(cfg, num_batches)
    return
  train_docs = sources.documents(d, "train")
  tokenizer = build_tokenizer(
      d, lambda: itertools.chain(train_docs, sources.documents(d, "eval")))
  dataset = make_dataset(train_docs, tokenizer, seq_len=d.seq_len,
                         batch_size=cfg.train.batch_size, mode=d.mode, seed=cfg.train.seed,
                         shuffle=d.shuffle, prefetch=0)
  print(f"{d.source}: {count(len(train_docs), 'training document')}, tokenizer {tokenizer!r}, "
        f"mode {d.mode!r}", flush=True)
  for i, batch in enumerate(itertools.islice(iter(dataset), max(1, num_batches))):
    print(f"=== batch {i} ===\n{describe(batch, tokenizer)}", flush=True)


def _inspect_mixture(cfg: ml_collections.ConfigDict, num_batches: int) -> None:
  from jaxgen.data import mixture
  from jaxgen.data.pipeline import describe
  d = cfg.data
  parts = [(c, mixture.component_cfg(d, c)) for c in mixture.parse(d.mixture)]
  train = [(c, sources.documents(cd, "train")) for c, cd in parts]
  raw = [cd for _, cd in parts if not str(cd.source).startswith("store:")]
  # The vocabulary training builds: every raw component's train and eval documents.
  tokenizer = mixture.tokenizer(parts, lambda: itertools.chain(
      *(sources.documents(cd, split) for cd in raw for split in sources.SPLITS)))
  dataset = mixture.make_dataset(train, tokenizer, seq_len=d.seq_len,
                                 batch_size=cfg.train.batch_size, mode=d.mode,
                                 seed=cfg.train.seed, shuffle=d.shuffle, prefetch=0)
  print(f"data.mixture of {count(len(parts), 'source')}, tokenizer {tokenizer!r}, mode "
        f"{d.mode!r}: " + ", ".join(f"{c.name} = {c.source} (weight {c.weight:g}, "
                                    f"{count(len(docs), 'training document')})"
                                    for c, docs in train), flush=True)
  it = iter(dataset)
  for i in range(max(1, num_batches)):
    batch = next(it)
    drawn = ", ".join(f"{k} {v:,}" for k, v in it.drawn_tokens().items())
    print(f"=== batch {i} === (tokens drawn so far: {drawn})\n{describe(batch, tokenizer)}",
          flush=True)
  it.close()


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
  from jaxgen.data import pairs
  if pairs.is_paired(d):  # one vocabulary for both sides: trained on both
    texts = [text for pair in pairs.pairs(d, "train") for text in pair]
  else:
    texts = sources.documents(d, "train")
  tokenizer = train_sentencepiece(texts, vocab_size, path)
  print(json.dumps({"tokenizer": str(path), "vocab_size": tokenizer.vocab_size}), flush=True)
  return path
