"""`jaxgen config --config=FILE [--config.KEY=VALUE ...]`: every key, its value, its doc.

ml_collections keeps no per-key documentation; jaxgen's lives in the comments
of `jaxgen/config.py`, where each key is set. A key's doc is the comment at
the end of its line, else the comment lines right above it (the model keys
are set on `m`, the others on `c.SECTION`). A recipe's own comment on a key
it sets is added after it.
"""

from __future__ import annotations

import functools
import io
import pathlib
import tokenize

import ml_collections

from jaxgen.models import registry

_CONFIG_SOURCE = pathlib.Path(__file__).with_name("config.py")

# Keys jaxgen/config.py sets without a comment (a comment there takes precedence).
_MORE = {
    "data.eval_split": "the split evaluated (tfds and bundled split names)",
    "data.synthetic_seed": "synthetic:*: the seed that draws the examples",
    "data.synthetic_max_len": "symbols per source at most (see synthetic_min_len)",
    "data.synthetic_train_examples": "synthetic:*: training pairs drawn",
    "data.synthetic_eval_examples": "synthetic:*: validation pairs drawn",
    "train.steps": "optimizer steps; a resumed run continues up to this many",
    "train.seed": "initialisation, dropout and data-order seed",
    "train.warmup_steps": "linear learning-rate warm-up from 0 to the peak",
    "train.b1": "AdamW's first-moment decay",
    "train.b2": "AdamW's second-moment decay",
    "train.eps": "AdamW's epsilon",
    "train.log_every": "steps between progress lines and metrics.jsonl records",
    "eval.every_steps": "steps between evaluations; 0: none while training",
    "mesh.fsdp": "devices that shard the weights (and the batch) ZeRO-3 style",
    "mesh.tensor": "devices that shard heads, MLP and vocabulary (Megatron style)",
    "mesh.logical_axis_rules": "(logical axis, mesh axes) pairs; see "
                               "jaxgen.config.DEFAULT_LOGICAL_AXIS_RULES",
    "mesh.dcn_fsdp": "how many ways of mesh.fsdp cross hosts (see mesh.dcn_data)",
    "sample.prompt": "the end-of-training sample's prompt",
    "sample.temperature": "the end-of-training sample's temperature; 0: greedy",
    "model.type": " | ".join(map(repr, registry.names())),
    "model.num_layers": "layers (an encoder-decoder's decoder layers)",
    "model.num_heads": "attention heads",
    "model.embed_dim": "width of the token embeddings (and the residual stream)",
    "model.hidden_size": "LSTM state width",
    "model.use_bias": "biases in the attention and MLP projections and the norms",
    "model.dropout": "dropout probability while training; 0: off",
    "model.tie_embeddings": "the output head reuses the token embedding table",
    "model.scan_layers": "one scanned layer stack: faster compiles for deep models",
    "model.param_dtype": "parameter (master weight) dtype",
}


def format_config(cfg: ml_collections.ConfigDict, label: str, overrides: dict,
                  recipe: str | None = None) -> str:
  """The resolved `cfg` as `section.key = value  # doc` lines, sections apart."""
  docs = key_docs()
  notes = _comments(pathlib.Path(recipe)) if recipe and recipe.endswith(".py") else {}
  given = (" with " + " ".join(f"--config.{k}={v}" for k, v in overrides.items())
           if overrides else "")
  lines = [f"# {label}{given}: every key as the run sees it (override any with "
           "--config.KEY=VALUE)"]
  rows = list(leaves(cfg))
  width = min(40, max(len(f"{k} = {v!r}") for k, v in rows))
  section = None
  for key, value in rows:
    if key.split(".")[0] != section:
      section = key.split(".")[0]
      lines.append("")
      if docs.get(section):  # a comment above `c.SECTION = ConfigDict()`
        lines.append(f"# {section}: {docs[section]}")
    text = f"{key} = {value!r}"
    doc = docs.get(key, "")
    if notes.get(key) and notes[key] != doc:
      doc = f"{doc}; recipe: {notes[key]}" if doc else f"recipe: {notes[key]}"
    lines.append(f"{text:<{width}}  # {doc}" if doc else text)
  return "\n".join(lines)


def leaves(cfg, prefix: str = ""):
  """(dotted key, value) of every leaf of a ConfigDict, sorted within each section."""
  for key, value in cfg.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


@functools.cache
def key_docs() -> dict[str, str]:
  """Dotted key -> one-line doc from jaxgen/config.py (the first setting's, where several
  model families set one key)."""
  return {**_MORE, **_comments(_CONFIG_SOURCE, above=True)}


def _comments(path: pathlib.Path, above: bool = False) -> dict[str, str]:
  """Dotted key -> the comment on the line that sets it (`c.data.seq_len = 64  # ...`),
  or with `above`, the comment lines right above where there is none."""
  try:
    source = path.read_text(encoding="utf-8")
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
  except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError):
    return {}  # a recipe that cannot be read adds no notes
  docs: dict[str, str] = {}
  block: list[str] = []  # comment lines since the last statement or blank line
  statement: list[tokenize.TokenInfo] = []
  for tok in tokens:
    if tok.type == tokenize.COMMENT and not statement:
      block.append(tok.string.lstrip("#").strip())
    elif tok.type == tokenize.NL and not statement:
      if tok.line.strip() == "":
        block = []  # a blank line ends a comment block
    elif tok.type == tokenize.NEWLINE or tok.type == tokenize.ENDMARKER:
      key, trailing = _assignment(statement)
      doc = trailing or (" ".join(block) if above else "")
      if key and doc and key not in docs:
        docs[key] = doc
      statement, block = [], []
    elif tok.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.NL):
      statement.append(tok)
  return docs


def _assignment(tokens: list[tokenize.TokenInfo]) -> tuple[str | None, str]:
  """('section.key', trailing comment) of `c.section.key = ...` or `m.key = ...`."""
  trailing = tokens[-1].string.lstrip("#").strip() if tokens and \
      tokens[-1].type == tokenize.COMMENT else ""
  names = []
  for i, tok in enumerate(tokens):
    if tok.type == tokenize.OP and tok.string == "=":
      if i % 2 == 0 or i < 3:  # NAME (. NAME)+ has an odd length of at least 3
        return None, ""
      break
    if (tok.type == tokenize.NAME) != (i % 2 == 0) or (i % 2 and tok.string != "."):
      return None, ""
    if tok.type == tokenize.NAME:
      names.append(tok.string)
  else:
    return None, ""
  if names[0] == "m":
    return ".".join(["model", *names[1:]]), trailing
  if names[0] == "c":
    return ".".join(names[1:]), trailing
  return None, ""
