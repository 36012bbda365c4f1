"""Every check of a run config, in one place, before anything runs.

`check(cfg)` walks every key of every section against `RULES` (type, range,
choices; floats must be finite), rejects keys no rule knows, then checks the
relations between keys. The first problem raises a `UserError` of one line
naming the key, its value and what is allowed.

Checks that need the devices are here too, as functions of the device count
or mesh shape (`launch_problems`, `batch_problems`): `jaxgen train` calls them
on the devices it has, `jaxgen plan` on the devices it plans for. Checks that
need the data (corpus length, tokenizer) stay with the code that reads it,
still before the workdir is touched.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from jaxgen.data import pairs, sources
from jaxgen.errors import UserError
from jaxgen.models import registry
from jaxgen.parallel.mesh import data_parallel_size, dcn_problems, mesh_axes, mesh_shape

_INT32_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one key accepts. `lo`/`hi` bound numbers (`open_lo`/`open_hi` exclude
  the bound itself); `choices` lists the allowed strings; `also` lists values
  allowed outside the range, with their meaning."""
  kind: type  # int, float, bool or str
  lo: float | None = None
  hi: float | None = None
  open_lo: bool = False
  open_hi: bool = False
  choices: tuple[str, ...] = ()
  also: tuple[tuple[Any, str], ...] = ()
  nonempty: bool = False
  what: str = ""  # what the key means, for the message

  def allowed(self) -> str:
    if self.choices:
      return "one of " + ", ".join(repr(c) for c in self.choices)
    if self.kind is bool:
      return "True or False"
    if self.kind is str:
      return "a non-empty string" if self.nonempty else "a string"
    kind = "an integer" if self.kind is int else "a finite number"
    bounds = []
    if self.lo is not None:
      bounds.append(f"{'>' if self.open_lo else '>='} {_num(self.lo)}")
    if self.hi is not None:
      bounds.append(f"{'<' if self.open_hi else '<='} {_num(self.hi)}")
    text = f"{kind} {' and '.join(bounds)}".rstrip()
    for value, meaning in self.also:
      text += f", or {value!r} ({meaning})"
    return text


def _int(lo=None, hi=_INT32_MAX, **kw) -> Rule:
  return Rule(int, lo=lo, hi=hi, **kw)


def _float(lo=None, hi=None, **kw) -> Rule:
  return Rule(float, lo=lo, hi=hi, **kw)


def _choice(*choices: str, **kw) -> Rule:
  return Rule(str, choices=choices, **kw)


_BOOL = Rule(bool)
_PATH = Rule(str)  # '' means "not set" wherever a path is optional
_DTYPE = _choice("float32", "bfloat16", "float16")
_DROPOUT = _float(0.0, 1.0, open_hi=True, what="probability of dropping a unit")
_VOCAB_MULTIPLE = _int(1, 65536, what="vocabulary padding multiple")

_DATA = {
    "source": Rule(str, nonempty=True, what="tfds:NAME[:VERSION], text:PATH_OR_GLOB or "
                   "jsonl:PATH_OR_GLOB"),
    "train_split": Rule(str, nonempty=True),
    "eval_split": Rule(str, nonempty=True),
    "text_key": Rule(str, nonempty=True),
    "text_lines": _BOOL,
    "val_fraction": _float(0.0, 1.0, open_hi=True),
    "tfds_data_dir": _PATH,
    "tfds_manual_dir": _PATH,
    "tokenizer": _choice("char", "byte", "sentencepiece", "hf"),
    "tokenizer_path": _PATH,
    "mode": _choice("windows", "concat", "pack"),
    "shuffle": _BOOL,
    "prefetch": _int(0, 1024),
    "max_in_memory_mb": _int(1, 1 << 30),
    "task": _choice("", "lm", "seq2seq"),
    "mixture": Rule(str, what="SOURCE:WEIGHT,... (e.g. 'store:/d/web:0.7,store:/d/code:0.3') "
                    "or ''"),
    "seq_len": _int(1, 1 << 20),
    "source_len": _int(0, 1 << 20, also=((0, "data.seq_len"),)),
    "pair_split": _choice("hashed", "tail"),
    "doc_split": _choice("hashed", "tail"),
    "source_key": Rule(str, what="jsonl source field; '' for documents"),
    "target_key": Rule(str, nonempty=True),
    "synthetic_seed": _int(0),
    "synthetic_min_len": _int(1, 4096),
    "synthetic_max_len": _int(1, 4096),
    "synthetic_symbols": _int(1, 26, what="letters a..z used"),
    "synthetic_train_examples": _int(1),
    "synthetic_eval_examples": _int(1),
}
_TRAIN = {
    "steps": _int(1),
    "batch_size": _int(1),
    "grad_accum_steps": _int(1),
    "seed": _int(0),
    # No upper bounds where a large value is odd rather than invalid: a run
    # that diverges stops with its own one-line error.
    "learning_rate": _float(0.0, open_lo=True),
    "min_learning_rate": _float(0.0),
    "warmup_steps": _int(0),
    "decay_steps": _int(0, also=((0, "decay over train.steps"),)),
    "b1": _float(0.0, 1.0, open_hi=True),
    "b2": _float(0.0, 1.0, open_hi=True),
    "eps": _float(0.0),
    "weight_decay": _float(0.0),
    "grad_clip": _float(0.0, also=((0, "no clipping"),)),
    "z_loss": _float(0.0),
    "label_smoothing": _float(0.0, 1.0, open_hi=True),
    "log_every": _int(1),
    "compilation_cache_dir": _PATH,
}
_EVAL = {
    "every_steps": _int(0),
    "steps": _int(0),
    "batch_size": _int(0),
    "full_split_at_end": _BOOL,
    "full_split_max_tokens": _int(0, what="a token budget for the whole-split loss; 0: no cap"),
    "decode_examples": _int(0),
}
_CHECKPOINT = {
    "every_steps": _int(0),
    "keep": _int(1),
    "keep_best": _BOOL,
}
_MESH_SIZE = _int(1, 1 << 20, also=((-1, "all devices left over"),))
# Besides these, one size (_MESH_SIZE) per axis that mesh.axes names.
_MESH = {"axes": None,  # axis names: checked by _check_axes
         "logical_axis_rules": None,  # a sequence of pairs: checked by _check_rules
         "dcn_data": _int(1, 1 << 20), "dcn_fsdp": _int(1, 1 << 20)}
_DISTRIBUTED = {
    "coordinator_address": Rule(str, what="host:port"),
    "num_processes": _int(0, 1 << 20, also=((0, "not set"),)),
    "process_id": _int(0, 1 << 20, also=((-1, "not set"),)),
    "local_device_ids": Rule(str, what="comma-separated device ids"),
    "initialization_timeout_s": _int(1, 1 << 20),
    "heartbeat_timeout_s": _int(1, 1 << 20),
}
_SAMPLE = {
    "num_tokens": _int(0),
    "prompt": Rule(str),
    "temperature": _float(0.0),
    "top_k": _int(0),
}
_TRANSFORMER = {
    "type": _choice(*registry.names()),
    "num_layers": _int(1, 4096),
    "num_heads": _int(1, 4096),
    "num_kv_heads": _int(0, 4096, also=((0, "same as num_heads"),)),
    "embed_dim": _int(1, 1 << 20),
    "head_dim": _int(0, 1 << 16, also=((0, "embed_dim // num_heads"),)),
    "mlp_dim": _int(0, 1 << 22, also=((0, "4 * embed_dim"),)),
    "max_len": _int(0, 1 << 24, also=((0, "data.seq_len"),)),
    "position": _choice("learned", "rope"),
    "rope_base": _float(0.0, open_lo=True),
    "norm": _choice("layernorm", "rmsnorm"),
    "mlp": _choice("gelu", "swiglu"),
    "norm_eps": _float(0.0, 1.0, open_lo=True),
    "use_bias": _BOOL,
    "dropout": _DROPOUT,
    "tie_embeddings": _BOOL,
    "scan_layers": _BOOL,
    "remat": _choice("none", "full", "dots"),
    "attention_backend": _choice("auto", "xla", "cudnn"),
    "dtype": _DTYPE,
    "param_dtype": _DTYPE,
    "vocab_size": _int(0, 1 << 24, also=((0, "the tokenizer's"),)),
    "vocab_multiple": _VOCAB_MULTIPLE,
}
_LSTM = {
    "type": _TRANSFORMER["type"],
    "num_layers": _int(1, 1024),
    "embed_dim": _int(1, 1 << 20),
    "hidden_size": _int(1, 1 << 20),
    "dropout": _DROPOUT,
    "unroll": _int(1, 1024),
    "dtype": _DTYPE,
    "param_dtype": _DTYPE,
    "vocab_multiple": _VOCAB_MULTIPLE,
}

_ENCODER_DECODER = {
    **_TRANSFORMER,
    "num_encoder_layers": _int(0, 4096, also=((0, "same as num_layers"),)),
    "max_source_len": _int(0, 1 << 24, also=((0, "data.source_len"),)),
    "share_embeddings": _BOOL,
}

_LSTM_ATTENTION = {
    **_LSTM,
    "num_encoder_layers": _int(0, 1024, also=((0, "same as num_layers"),)),
    "bidirectional": _BOOL,
    "attention": _choice("luong", "bahdanau"),
    "share_embeddings": _BOOL,
}

# Section -> key -> Rule; `model` depends on model.type.
RULES: dict[str, dict[str, Rule | None]] = {
    "data": _DATA, "train": _TRAIN, "eval": _EVAL, "checkpoint": _CHECKPOINT,
    "mesh": _MESH, "sample": _SAMPLE, "distributed": _DISTRIBUTED,
}
MODEL_RULES = {"transformer": _TRANSFORMER, "lstm": _LSTM, "encoder_decoder": _ENCODER_DECODER,
               "lstm_attention": _LSTM_ATTENTION}


def check(cfg: Any) -> None:
  """Raises UserError (one line) on the first bad key or bad relation in `cfg`."""
  sections = dict(RULES, model=_model_rules(cfg), mesh=_mesh_rules(cfg))
  for name in cfg.keys():
    if name not in sections:
      raise UserError(f"the config has a section {name!r} jaxgen does not know; known: "
                      f"{', '.join(sections)}")
  for name, rules in sections.items():
    if name not in cfg:
      raise UserError(f"the config has no {name!r} section; start recipes from "
                      "jaxgen.config.base_config()")
    section = cfg[name]
    for key in section.keys():
      if key not in rules:
        raise UserError(f"{name}.{key} is not a key jaxgen knows; known {name} keys: "
                        f"{', '.join(rules)}")
    for key, rule in rules.items():
      if key not in section:
        raise UserError(f"the config has no key {name}.{key}; start recipes from "
                        "jaxgen.config")
      if rule is not None:
        check_value(f"{name}.{key}", section[key], rule)
  _check_rules(cfg.mesh.logical_axis_rules, mesh_axes(cfg.mesh))
  _check_relations(cfg)


def check_value(key: str, value: Any, rule: Rule) -> None:
  """Raises UserError unless `value` is what `rule` allows for `key`."""
  if any(value == v and type(value) is type(v) for v, _ in rule.also):
    return
  ok = _type_ok(value, rule.kind)
  if ok and rule.kind in (int, float):
    ok = math.isfinite(value) and _in_range(value, rule)
  elif ok and rule.kind is str:
    ok = (not rule.choices or value in rule.choices) and (not rule.nonempty or bool(value))
  if not ok:
    what = f" ({rule.what})" if rule.what else ""
    raise UserError(f"{key}={value!r} is not allowed{what}: use {rule.allowed()}")


def _model_rules(cfg: Any) -> dict[str, Rule]:
  model_type = cfg.model.get("type") if "model" in cfg else None
  if model_type not in MODEL_RULES:
    raise UserError(f"model.type={model_type!r} is unknown; use one of "
                    f"{', '.join(map(repr, MODEL_RULES))}")
  return MODEL_RULES[model_type]


def _type_ok(value: Any, kind: type) -> bool:
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, kind)


def _in_range(value: float, rule: Rule) -> bool:
  if rule.lo is not None and (value <= rule.lo if rule.open_lo else value < rule.lo):
    return False
  if rule.hi is not None and (value >= rule.hi if rule.open_hi else value > rule.hi):
    return False
  return True


def _mesh_rules(cfg: Any) -> dict[str, Rule | None]:
  """The mesh section's keys: _MESH and a size for each axis mesh.axes names."""
  if "mesh" not in cfg:
    return _MESH  # check() says the section is missing
  axes = cfg.mesh.get("axes")
  _check_axes(axes)
  return {**_MESH, **{axis: _MESH_SIZE for axis in axes}}


def _check_axes(axes: Any) -> None:
  fix = ("; name the mesh's axes outermost first, e.g. ('data', 'fsdp', 'tensor'), each with "
         "its size in mesh.<axis>")
  if axes is None:
    raise UserError("the config has no key mesh.axes; start recipes from jaxgen.config")
  if isinstance(axes, str) or not isinstance(axes, Sequence) or not axes:
    raise UserError(f"mesh.axes={axes!r} is not a tuple of axis names{fix}")
  for axis in axes:
    if not isinstance(axis, str) or not axis.isidentifier() or axis in _MESH or axis.startswith(
        "dcn_"):
      raise UserError(f"mesh.axes names {axis!r}, which cannot be a mesh axis{fix}")
  if len(set(axes)) != len(axes):
    raise UserError(f"mesh.axes={tuple(axes)!r} names an axis twice{fix}")


def _check_rules(rules: Any, mesh_axes_: Sequence[str]) -> None:
  """mesh.logical_axis_rules: pairs (logical name, None | mesh axis | tuple of mesh axes)."""
  fix = ("; write pairs such as ('embed', 'fsdp') or ('batch', ('data', 'fsdp')) "
         f"over mesh axes {', '.join(mesh_axes_)}")
  if isinstance(rules, str) or not isinstance(rules, Sequence):
    raise UserError(f"mesh.logical_axis_rules={rules!r} is not a sequence of pairs{fix}")
  for rule in rules:
    if isinstance(rule, str) or not isinstance(rule, Sequence) or len(rule) != 2 or not (
        isinstance(rule[0], str) and rule[0]):
      raise UserError(f"mesh.logical_axis_rules entry {rule!r} is not a (name, mesh axes) "
                      f"pair{fix}")
    axes = rule[1]
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    if not isinstance(axes, Sequence) or any(a not in mesh_axes_ for a in axes):
      raise UserError(f"mesh.logical_axis_rules entry {tuple(rule)!r} names a mesh axis "
                      f"that does not exist{fix}")


def _check_relations(cfg: Any) -> None:
  d, t, m = cfg.data, cfg.train, cfg.model
  sources.parse_source(d.source)
  require(t.batch_size % t.grad_accum_steps == 0,
           f"train.batch_size={t.batch_size} is not divisible by train.grad_accum_steps="
           f"{t.grad_accum_steps}; use a batch size that is a multiple of it")
  require(t.min_learning_rate <= t.learning_rate,
           f"train.min_learning_rate={t.min_learning_rate} exceeds train.learning_rate="
           f"{t.learning_rate}; the cosine decay ends at the minimum, so lower it")
  axes = mesh_axes(cfg.mesh)
  sizes = [cfg.mesh[a] for a in axes]
  named = ", ".join(f"mesh.{a}" for a in axes[:-1]) + f" and mesh.{axes[-1]}"
  require(sizes.count(-1) <= 1,
           f"{named if len(axes) > 1 else f'mesh.{axes[0]}'}: at most one may be -1 (all "
           f"devices left over), got {', '.join(f'{a}={s}' for a, s in zip(axes, sizes))}")
  _check_distributed(cfg.distributed)
  require(d.tokenizer != "sentencepiece" or bool(d.tokenizer_path),
           "data.tokenizer='sentencepiece' needs data.tokenizer_path: the .model file "
           "(`jaxgen tokenizer train` writes one)")
  require(d.tokenizer != "hf" or bool(d.tokenizer_path),
           "data.tokenizer='hf' needs data.tokenizer_path: a directory holding a Hugging "
           "Face tokenizer.json (`jaxgen import` writes one into its workdir)")
  _check_pairs(d, m)
  if m.type == "lstm_attention":
    return
  if m.type == "lstm":
    require(d.mode != "pack", "data.mode='pack' needs a Transformer (segment ids mask its "
             "attention); an LSTM reads data.mode='windows' or 'concat'")
    return
  max_len = m.max_len or d.seq_len
  require(d.seq_len <= max_len, f"data.seq_len={d.seq_len} exceeds model.max_len="
           f"{m.max_len}; raise model.max_len or lower data.seq_len")
  require(m.head_dim or m.embed_dim % m.num_heads == 0,
           f"model.embed_dim={m.embed_dim} is not divisible by model.num_heads={m.num_heads}; "
           "change one, or set model.head_dim")
  kv = m.num_kv_heads or m.num_heads
  require(kv <= m.num_heads and m.num_heads % kv == 0,
           f"model.num_kv_heads={m.num_kv_heads} must divide model.num_heads={m.num_heads} "
           f"(each key/value head serves a group of query heads); use one of "
           f"{', '.join(str(k) for k in range(1, m.num_heads + 1) if m.num_heads % k == 0)}, "
           "or 0 for one per query head")
  head = m.head_dim or m.embed_dim // m.num_heads
  require(m.position != "rope" or head % 2 == 0,
           f"model.position='rope' rotates pairs of dimensions, but the head size is {head}; "
           "use an even model.head_dim (or embed_dim / num_heads)")
  require(m.vocab_size == 0 or m.vocab_size >= 3,
           f"model.vocab_size={m.vocab_size} is too small to hold pad, bos and eos; use 0 "
           "(the tokenizer's) or a size at least the tokenizer's")


def _check_mixture(d: Any, m: Any) -> None:
  """A mixture's components: document sources, for a language model."""
  from jaxgen import tasks
  from jaxgen.data import mixture
  tasks.task_of(d)  # a mixture is a language model's
  for component in mixture.parse(d.mixture):
    c = mixture.component_cfg(d, component)
    try:
      sources.parse_source(c.source)
    except UserError as e:
      raise UserError(f"data.mixture component {component.source!r}: {e}") from None
    require(not pairs.is_paired(c),
            f"data.mixture component {component.source!r} gives (source, target) pairs; a "
            "mixture draws from document sources for a language model")
  require(not registry.is_conditional(m.type),
          f"data.mixture mixes document sources, which model.type={m.type!r} cannot read; "
          "train it on one paired data.source")


def _check_pairs(d: Any, m: Any) -> None:
  """A conditional model reads pairs, a language model documents."""
  if d.get("mixture", ""):
    _check_mixture(d, m)
    return
  from jaxgen import tasks
  paired = tasks.task_of(d).conditional
  if registry.is_conditional(m.type):
    require(paired, f"model.type={m.type!r} generates from a source, so it needs paired "
            f"data, but data.source={d.source!r} gives documents; use synthetic:TASK, "
            "tsv:PATH_OR_GLOB, or jsonl:PATH_OR_GLOB or tfds:NAME with data.source_key")
    max_source = m.get("max_source_len", 0)
    require(not max_source or (d.source_len or d.seq_len) <= max_source,
            f"data.source_len={d.source_len or d.seq_len} exceeds model.max_source_len="
            f"{max_source}; raise model.max_source_len or lower data.source_len")
  else:
    require(not paired, f"data.source={d.source!r} gives (source, target) pairs, which "
            f"model.type={m.type!r} cannot read; use model.type='encoder_decoder', or "
            "documents (text:, bundled:, or jsonl:/tfds: without data.source_key)")
  if not paired:
    return
  scheme, _, task = str(d.source).partition(":")
  require(scheme != "synthetic" or task in pairs.TASKS,
          f"data.source={d.source!r} names no synthetic task; use one of "
          + ", ".join(f"synthetic:{t}" for t in pairs.TASKS))
  require(d.mode != "concat", "data.mode='concat' joins documents into one stream, which "
          "pairs are not; use data.mode='windows' (one pair per row, the default) or "
          "'pack' (several pairs per row)")
  require(d.mode != "pack" or m.type != "lstm_attention",
          "data.mode='pack' puts several pairs in a row, and model.type='lstm_attention' "
          "would carry its recurrent state across them; use data.mode='windows' (one pair "
          "per row) or model.type='encoder_decoder'")
  require(d.synthetic_min_len <= d.synthetic_max_len,
          f"data.synthetic_min_len={d.synthetic_min_len} exceeds data.synthetic_max_len="
          f"{d.synthetic_max_len}; the lengths are a range min..max")


def _check_distributed(dist: Any) -> None:
  address = dist.coordinator_address
  host, _, port = address.rpartition(":")
  require(not address or (host and port.isdigit() and 0 < int(port) < 65536),
          f"distributed.coordinator_address={address!r} is not host:port; use e.g. "
          "'10.0.0.1:1234' (process 0's host and a free port), or '' to leave it unset")
  ids = dist.local_device_ids
  require(not ids or all(i.strip().isdigit() for i in ids.split(",")),
          f"distributed.local_device_ids={ids!r} is not a comma-separated list of device "
          "ids; use e.g. '0,1', or '' for all of this host's devices")
  n, i = dist.num_processes, dist.process_id
  require(not n or i < n, f"distributed.process_id={i} is not below distributed."
          f"num_processes={n}; processes are numbered 0 to {n - 1}")


def require(ok: bool, message: str) -> None:
  if not ok:
    raise UserError(message)


def _num(x: float) -> str:
  return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def launch_problems(cfg: Any, num_devices: int, num_processes: int = 1) -> list[str]:
  """Every problem of `cfg` on `num_devices` devices, one line each: the mesh
  against the device count, then the batches against the data-parallel size."""
  problems = []
  try:
    shape = mesh_shape(cfg.mesh, num_devices)
  except UserError as e:
    problems.append(str(e))
    sizes = {a: cfg.mesh[a] for a in mesh_axes(cfg.mesh)}
    # A mesh with the wrong device count still says how the batch would split.
    shape = sizes if -1 not in sizes.values() else None
  if shape is not None:
    problems += dcn_problems(cfg.mesh, shape) + batch_problems(cfg, shape, num_processes)
  return problems


def batch_problems(cfg: Any, shape: dict[str, int], num_processes: int = 1) -> list[str]:
  """The train and eval batches against the data-parallel size of a mesh `shape`."""
  t = cfg.train
  dp = data_parallel_size(shape, cfg.mesh.logical_axis_rules)
  eval_batch = cfg.eval.batch_size or t.batch_size
  problems = []
  if t.batch_size % (dp * t.grad_accum_steps):
    problems.append(
        f"train.batch_size={t.batch_size} is not divisible by the data-parallel size {dp} "
        f"(mesh.data * mesh.fsdp) times train.grad_accum_steps={t.grad_accum_steps}; "
        f"use a multiple of {dp * t.grad_accum_steps}")
  if eval_batch % dp:
    problems.append(f"eval.batch_size={eval_batch} is not divisible by the data-parallel "
                    f"size {dp}; use a multiple of {dp}")
  if dp % num_processes:
    problems.append(f"the data-parallel size {dp} must be a multiple of the {num_processes} "
                    "processes, so that each reads its own rows of every batch")
  return problems
