"""Builds a typed model config and model from the run's `model` ConfigDict.

This is the only place that reads `config.model`, through the builder its family
registered (`jaxgen.models.registry`); layers receive their own frozen
dataclass, never the run config.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxgen.errors import UserError
from jaxgen.models import registry

# A registered family's frozen config dataclass, and its model.
ModelConfig = Any
Model = Any

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_config(m: ml_collections.ConfigDict, vocab_size: int, seq_len: int,
                 source_len: int = 0) -> ModelConfig:
  """The typed config for `m` with the tokenizer's `vocab_size` padded up; `seq_len`
  is the (target) sequence length, `source_len` a conditional model's source length
  (0: `seq_len`)."""
  if m.get("type") not in registry.names():
    raise UserError(f"model.type={m.get('type')!r} is unknown; use one of "
                    f"{', '.join(registry.names())}")
  if m.get("vocab_size", 0) and m.vocab_size < vocab_size:
    raise UserError(f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's "
                    f"{vocab_size}; raise it or set it to 0")
  vocab = padded_vocab_size(max(vocab_size, m.get("vocab_size", 0)), m.get("vocab_multiple", 128))
  dtype, param_dtype = _dtype(m, "dtype"), _dtype(m, "param_dtype")
  try:
    return registry.get(m.type).build_config(
        m, vocab_size=vocab, seq_len=seq_len, source_len=source_len or seq_len, dtype=dtype,
        param_dtype=param_dtype)
  except ValueError as e:  # the dataclasses' own checks
    raise UserError(f"bad model config: {e}") from None


def create_model(cfg: ModelConfig, rngs: nnx.Rngs) -> Model:
  return registry.of_config(cfg).model_type(cfg, rngs=rngs)


def context_limit(cfg: ModelConfig) -> int | None:
  """The longest sequence the model reads at once; None when unbounded (LSTM)."""
  return registry.of_config(cfg).context_limit(cfg)


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
  multiple = max(1, multiple)
  return -(-vocab_size // multiple) * multiple


def _dtype(m: ml_collections.ConfigDict, key: str):
  name = m.get(key, "float32")
  if name not in _DTYPES:
    raise UserError(f"model.{key}={name!r} is unknown; use one of {', '.join(_DTYPES)}")
  return _DTYPES[name]
