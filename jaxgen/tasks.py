"""The kind of training a run does: `data.task`, and everything that depends on it.

  lm       a language model on documents (data/sources.py, data/pipeline.py; a
           data.mixture of them, data/mixture.py)
  seq2seq  a conditional model on (source, target) pairs (data/pairs.py)

`task_of(data_cfg)` is the task `data.task` names; '' (what configs written before
the key get) infers it from `data.source` as jaxgen always did: pairs for tsv: and
synthetic:, for jsonl:/tfds: with data.source_key set, and for a store of pairs.
A task says what the rest of jaxgen asks about the data: its batch schema
(`batch_spec`, what the pipeline yields, `jaxgen plan` compiles for and the
models read), the training and validation data (`build`), the config keys that
define its stream of training batches, the vocabulary texts, the end-of-run
sample, and what `jaxgen data prepare|inspect` and `jaxgen tokenizer train` do.
The loop, `plan` and `commands` ask the task and do not branch on its kind.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import numpy as np

from jaxgen.errors import UserError
from jaxgen.messages import count

TASKS = ("lm", "seq2seq")


@dataclasses.dataclass(frozen=True)
class BatchSpec(Mapping):
  """The written schema of one batch: key -> (shape, dtype), shapes [rows, length]."""
  fields: tuple  # ((key, shape, dtype name), ...)

  def __getitem__(self, key):
    for k, shape, dtype in self.fields:
      if k == key:
        return tuple(shape), np.dtype(dtype)
    raise KeyError(key)

  def __iter__(self):
    return (k for k, _, _ in self.fields)

  def __len__(self) -> int:
    return len(self.fields)

  def abstract(self) -> dict:
    """jax.ShapeDtypeStruct per key: what `jaxgen plan` compiles the step for."""
    import jax  # pylint: disable=import-outside-toplevel
    return {k: jax.ShapeDtypeStruct(tuple(s), np.dtype(d)) for k, s, d in self.fields}

  def problems(self, batch: Mapping[str, Any]) -> list[str]:
    """How `batch` differs from the schema (nothing: it conforms)."""
    out = [f"keys {sorted(set(batch))} != {sorted(self)}"] if set(batch) != set(self) else []
    for k in set(batch) & set(self):
      shape, dtype = self[k]
      got = np.asarray(batch[k])
      if got.shape != shape or got.dtype != dtype:
        out.append(f"{k}: {got.dtype}{list(got.shape)}, expected {dtype}{list(shape)}")
    return out


def _spec(**fields) -> BatchSpec:
  return BatchSpec(tuple((k, tuple(s), d) for k, (s, d) in fields.items()))


@dataclasses.dataclass
class TaskData:
  """A run's data, as `Task.build` makes it."""
  tokenizer: Any
  train_data: Any  # grain.IterDataset of this host's batches
  eval_data: Any = None  # sampled validation batches, or None
  full_eval_data: Any = None  # one pass over the validation split, or None
  decode_pairs: list = dataclasses.field(default_factory=list)  # seq2seq: decoded examples
  source_len: int = 0
  doc_split: str | None = None  # the data.doc_split rule the split depends on, if any
  eval_parts: list = dataclasses.field(default_factory=list)  # a mixture's, per component
  # The training documents or pairs: (mixture component or None, items) each.
  train_items: list = dataclasses.field(default_factory=list)


# Keys that define every task's stream of training batches.
_COMMON_STREAM_KEYS = ("data.source", "data.train_split", "data.tokenizer",
                       "data.mode", "data.seq_len", "data.val_fraction", "train.batch_size",
                       "train.seed")


class LanguageModel:
  """Next-token prediction on documents."""
  name = "lm"
  stream_keys = _COMMON_STREAM_KEYS + ("data.mixture", "data.doc_split", "data.source_key")
  conditional = False

  def batch_spec(self, cfg, batch_size: int) -> BatchSpec:
    row = ((batch_size, cfg.data.seq_len), "int32")
    fields = dict(inputs=row, targets=row)
    if cfg.data.mode == "pack":  # see data/pipeline.py
      fields.update(segment_ids=row, positions=row,
                    weights=((batch_size, cfg.data.seq_len), "float32"))
    return _spec(**fields)

  def resumes_on_other_process_counts(self, cfg) -> bool:
    return cfg.data.mode == "windows"  # a batch is a function of seed and index alone

  def what(self, cfg) -> str:
    return f"data.mode={cfg.data.mode!r}"

  def vocabulary_size(self, cfg) -> int:
    from jaxgen.data import sources
    from jaxgen.data.tokenizer import build_tokenizer
    d = cfg.data
    return build_tokenizer(d, lambda: itertools.chain(sources.documents(d, "train"),
                                                      sources.documents(d, "eval"))).vocab_size

  def build(self, cfg, shard_index: int, shard_count: int, *, evaluate: bool,
            full_split: bool) -> TaskData:
    from jaxgen.data import mixture, sources
    from jaxgen.data.pipeline import make_dataset
    from jaxgen.data.tokenizer import build_tokenizer
    d, t = cfg.data, cfg.train
    eval_batch = cfg.eval.batch_size or t.batch_size
    if d.get("mixture", ""):
      parts = [(c, mixture.component_cfg(d, c)) for c in mixture.parse(d.mixture)]
    else:
      parts = [(None, d)]
    train_docs = [(c, sources.documents(cd, "train")) for c, cd in parts]
    eval_docs = [(c, sources.documents(cd, "eval")) for c, cd in parts]
    doc_split = next((docs.doc_split for _, docs in train_docs
                      if getattr(docs, "doc_split", None)), None)
    # A character vocabulary covers the validation text too, as nanoGPT's does.
    texts = lambda: itertools.chain(*(docs for _, docs in train_docs + eval_docs
                                      if not getattr(docs, "pretokenized", False)))
    single = parts[0][0] is None
    tokenizer = build_tokenizer(d, texts) if single else mixture.tokenizer(parts, texts)
    data = functools.partial(make_dataset, tokenizer=tokenizer, seq_len=d.seq_len,
                             mode=d.mode, shard_index=shard_index, shard_count=shard_count,
                             prefetch=d.prefetch)
    if single:
      train_data = data(train_docs[0][1], batch_size=t.batch_size // shard_count,
                        seed=t.seed, shuffle=d.shuffle)
    else:
      train_data = mixture.make_dataset(
          train_docs, tokenizer, seq_len=d.seq_len, batch_size=t.batch_size // shard_count,
          mode=d.mode, seed=t.seed, shuffle=d.shuffle, shard_index=shard_index,
          shard_count=shard_count, prefetch=d.prefetch)
    out = TaskData(tokenizer, train_data, source_len=d.get("source_len", 0) or d.seq_len,
                   doc_split=doc_split, train_items=train_docs)
    if not evaluate:
      return out
    for c, docs in eval_docs:
      # Unshuffled and from the start every time: each evaluation sees the same batches.
      sampled = data(docs, batch_size=eval_batch // shard_count, seed=t.seed + 1,
                     shuffle=False)
      whole = (_full_pass(data, docs, eval_batch, d.mode, shard_index, shard_count)
               if full_split else None)
      if c is None:
        out.eval_data, out.full_eval_data = sampled, whole
      else:
        out.eval_parts.append((c, sampled, whole))
    return out

  def sample(self, cfg, s, graphdef, params) -> str:
    from jaxgen.data.tokenizer import prompt_start
    from jaxgen.models.factory import context_limit
    from jaxgen.sample.batching import never_sampled
    from jaxgen.sample.decode import generate
    sample_cfg = cfg.sample
    start = prompt_start(s.tokenizer, cfg.data.mode, bool(sample_cfg.prompt))
    prompt = np.concatenate([np.asarray(start, np.int32),
                             s.tokenizer.encode(sample_cfg.prompt)])
    # The stream of (seed 0, this prompt, sample 0): `jaxgen sample --seed=0` with the
    # same prompt and settings prints this text as its first sample.
    tokens = generate(graphdef, params, prompt[None, :], sample_cfg.num_tokens,
                      seed=0, temperature=sample_cfg.temperature, top_k=sample_cfg.top_k,
                      vocab_size=s.tokenizer.vocab_size, max_len=context_limit(s.model_cfg),
                      exclude_ids=never_sampled(s.tokenizer))
    return sample_cfg.prompt + s.tokenizer.decode(tokens[0])

  def sizes(self, cfg) -> dict:
    """`jaxgen data prepare` without --out: readies the source, prints its sizes."""
    from jaxgen.data import sources
    sizes = sources.prepare(cfg.data)
    store = sources.parse_source(cfg.data.source)[0] == "store"
    for split, s in sizes.items():
      if store:
        print(f"{cfg.data.source} {split}: {count(s['documents'], 'document')}, "
              f"{count(s['tokens'], 'token')} (eos included)", flush=True)
      else:
        name = cfg.data.train_split if split == "train" else cfg.data.eval_split
        print(f"{cfg.data.source} {split} ({name}): {count(s['documents'], 'document')}, "
              f"{count(s['characters'], 'character')}", flush=True)
    return sizes

  def tokenizer_texts(self, cfg) -> Iterable[str]:
    from jaxgen.data import mixture, sources
    d = cfg.data
    if not d.get("mixture", ""):
      return sources.documents(d, "train")
    return [doc for c in mixture.parse(d.mixture)  # every component's training documents
            for doc in sources.documents(mixture.component_cfg(d, c), "train")]

  def inspect(self, cfg, num_batches: int) -> None:
    from jaxgen.data.pipeline import describe
    d = cfg.data
    built = self.build(cfg, 0, 1, evaluate=False, full_split=False)
    parts = built.train_items
    if parts[0][0] is not None:  # a mixture
      print(f"data.mixture of {count(len(parts), 'source')}, tokenizer {built.tokenizer!r}, "
            f"mode {d.mode!r}: " + ", ".join(
                f"{c.name} = {c.source} (weight {c.weight:g}, "
                f"{count(len(docs), 'training document')})" for c, docs in parts), flush=True)
    else:
      print(f"{d.source}: {count(len(parts[0][1]), 'training document')}, tokenizer "
            f"{built.tokenizer!r}, mode {d.mode!r}", flush=True)
    it = iter(built.train_data)
    for i in range(max(1, num_batches)):
      batch = next(it)
      drawn = getattr(it, "drawn_tokens", None)
      note = (" (tokens drawn so far: " + ", ".join(f"{k} {v:,}" for k, v in drawn().items())
              + ")") if drawn else ""
      print(f"=== batch {i} ==={note}\n{describe(batch, built.tokenizer)}", flush=True)
    it.close()


class SequenceToSequence:
  """A target generated from a source: (source, target) pairs."""
  name = "seq2seq"
  stream_keys = _COMMON_STREAM_KEYS + (
      "data.source_len", "data.pair_split", "data.source_key", "data.target_key",
      "data.synthetic_seed", "data.synthetic_min_len", "data.synthetic_max_len",
      "data.synthetic_symbols", "data.synthetic_train_examples")
  conditional = True

  def batch_spec(self, cfg, batch_size: int) -> BatchSpec:
    d = cfg.data
    target = ((batch_size, d.seq_len), "int32")
    source = ((batch_size, d.source_len or d.seq_len), "int32")
    fields = dict(inputs=target, targets=target, source=source, source_segment_ids=source,
                  segment_ids=target, weights=((batch_size, d.seq_len), "float32"))
    if d.mode == "pack":  # see data/packing.py
      fields.update(source_positions=source, positions=target)
    return _spec(**fields)

  def resumes_on_other_process_counts(self, cfg) -> bool:
    return False

  def what(self, cfg) -> str:
    return "paired data"

  def vocabulary_size(self, cfg) -> int:
    from jaxgen.data import pairs
    from jaxgen.data.tokenizer import build_tokenizer
    d = cfg.data
    return build_tokenizer(
        d, lambda: pairs.vocabulary_texts(*pairs.train_and_eval(d))).vocab_size

  def build(self, cfg, shard_index: int, shard_count: int, *, evaluate: bool,
            full_split: bool) -> TaskData:
    from jaxgen.data import pairs
    from jaxgen.data.tokenizer import build_tokenizer
    d, t = cfg.data, cfg.train
    source_len = d.get("source_len", 0) or d.seq_len
    train_pairs, eval_pairs = pairs.train_and_eval(d)
    tokenizer = build_tokenizer(d, lambda: pairs.vocabulary_texts(train_pairs, eval_pairs))
    data = functools.partial(pairs.make_pair_dataset, tokenizer=tokenizer,
                             source_len=source_len, target_len=d.seq_len,
                             shard_index=shard_index, shard_count=shard_count,
                             prefetch=d.prefetch)
    out = TaskData(tokenizer, data(train_pairs, batch_size=t.batch_size // shard_count,
                                   seed=t.seed, shuffle=d.shuffle, pack=d.mode == "pack"),
                   source_len=source_len, train_items=[(None, train_pairs)])
    if evaluate:
      # One unshuffled pass, one pair per row even when training packs: each
      # evaluation sees the same first eval.steps batches.
      eval_batch = cfg.eval.batch_size or t.batch_size
      out.eval_data = data(eval_pairs, batch_size=eval_batch // shard_count, seed=0,
                           shuffle=False, repeat=False)
      if full_split:
        out.full_eval_data = out.eval_data
      out.decode_pairs = pairs.decode_examples(eval_pairs, cfg.eval.decode_examples, tokenizer)
    return out

  def sample(self, cfg, s, graphdef, params) -> str:
    """The first validation pair's output."""
    if not s.decode_pairs:
      return ""
    from jaxgen.sample import conditional
    source = s.decode_pairs[0][0]
    out = conditional.generate_from_sources(
        graphdef, params, s.tokenizer, [source], source_len=s.source_len,
        max_new_tokens=s.model_cfg.max_len - 1, temperature=cfg.sample.temperature,
        top_k=cfg.sample.top_k, truncate=True)
    return f"{source} -> {out[0][0]}"

  def sizes(self, cfg) -> dict:
    from jaxgen.data import pairs
    sizes = {}
    for split in ("train", "eval"):
      items = pairs.pairs(cfg.data, split)
      sizes[split] = {"pairs": len(items)}
      print(f"{cfg.data.source} {split}: {count(len(items), 'pair')}", flush=True)
    return sizes

  def tokenizer_texts(self, cfg) -> Iterable[str]:
    from jaxgen.data import pairs
    # One vocabulary for both sides: trained on both.
    return [text for pair in pairs.pairs(cfg.data, "train") for text in pair]

  def inspect(self, cfg, num_batches: int) -> None:
    d = cfg.data
    built = self.build(cfg, 0, 1, evaluate=False, full_split=False)
    tokenizer = built.tokenizer
    print(f"{d.source}: {count(len(built.train_items[0][1]), 'training pair')}, tokenizer "
          f"{tokenizer!r}", flush=True)
    it = iter(built.train_data)
    for i in range(max(1, num_batches)):
      batch = next(it)
      print(f"=== batch {i} ===", flush=True)
      for b in range(len(batch["source"])):
        source_ids, target_ids = batch["source_segment_ids"][b], batch["segment_ids"][b]
        for n in sorted(set(target_ids[target_ids != 0].tolist())):  # one pair per segment
          src = batch["source"][b][source_ids == n]
          tgt = batch["targets"][b][(target_ids == n) & (batch["weights"][b] != 0)]
          row = f"row {b}.{n}: " if d.mode == "pack" else ""
          print(f"{row}{tokenizer.decode(src)!r} -> {tokenizer.decode(tgt)!r} ({len(src)} "
                f"-> {count(len(tgt), 'token')}, eos included)", flush=True)
    it.close()


_BY_NAME = {"lm": LanguageModel(), "seq2seq": SequenceToSequence()}


def task_of(data_cfg: Any):
  """The task `data.task` names, or for '' the one `data.source` implies."""
  from jaxgen.data import pairs
  name = data_cfg.get("task", "")
  if name and name not in _BY_NAME:
    raise UserError(f"data.task={name!r} is not a task; use one of "
                    f"{', '.join(map(repr, TASKS))}, or '' for the one data.source implies")
  if data_cfg.get("mixture", ""):
    if name not in ("", "lm"):
      raise UserError(f"data.task={name!r}, but data.mixture mixes document sources for a "
                      "language model (data.task='lm'); train on one paired data.source")
    return _BY_NAME["lm"]
  implied = "seq2seq" if pairs.is_paired(data_cfg) else "lm"
  if name and name != implied:
    gives = "(source, target) pairs" if implied == "seq2seq" else "documents"
    raise UserError(f"data.task={name!r}, but data.source={data_cfg.source!r} gives {gives} "
                    f"(data.task={implied!r}); set data.task={implied!r} or '', or use a "
                    "source of that kind")
  return _BY_NAME[name or implied]


def _full_pass(data: Callable, docs, batch_size: int, mode: str, shard_index: int,
               shard_count: int):
  """Every validation token once: non-overlapping windows, or packed documents.

  Every process reads the whole split and keeps its own rows of each global
  batch: per-process shares of the documents would give the processes
  different numbers of batches.
  """
  try:
    whole = data(docs, batch_size=batch_size, seed=0, shuffle=False, repeat=False,
                 mode="pack" if mode == "pack" else "concat", shard_index=0, shard_count=1)
  except UserError:  # a split too short to fill one batch: the sampled loss must do
    return None
  rows = batch_size // shard_count
  mine = slice(shard_index * rows, (shard_index + 1) * rows)
  return whole.map(lambda batch: {k: v[mine] for k, v in batch.items()})
