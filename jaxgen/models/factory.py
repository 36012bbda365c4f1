"""Builds a typed model config and model from the run's `model` ConfigDict.

This is the only place that reads `config.model`; layers receive their own
frozen dataclass, never the run config.
"""

from __future__ import annotations

from typing import Union

import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxgen.errors import UserError
from jaxgen.models.attention import BACKENDS
from jaxgen.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig
from jaxgen.models.lstm import LSTMConfig, LSTMLM
from jaxgen.models.lstm_attention import LSTMAttention, LSTMAttentionConfig
from jaxgen.models.transformer import TransformerConfig, TransformerLM

ModelConfig = Union[TransformerConfig, LSTMConfig, EncoderDecoderConfig, LSTMAttentionConfig]
Model = Union[TransformerLM, LSTMLM, EncoderDecoder, LSTMAttention]
TYPES = ("transformer", "lstm", "encoder_decoder", "lstm_attention")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_config(m: ml_collections.ConfigDict, vocab_size: int, seq_len: int,
                 source_len: int = 0) -> ModelConfig:
  """The typed config for `m` with the tokenizer's `vocab_size` padded up; `seq_len`
  is the (target) sequence length, `source_len` an encoder-decoder's source length
  (0: `seq_len`)."""
  if m.get("vocab_size", 0) and m.vocab_size < vocab_size:
    raise UserError(f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's "
                    f"{vocab_size}; raise it or set it to 0")
  vocab = padded_vocab_size(max(vocab_size, m.get("vocab_size", 0)), m.get("vocab_multiple", 128))
  dtype, param_dtype = _dtype(m, "dtype"), _dtype(m, "param_dtype")
  try:
    if m.type == "lstm":
      return LSTMConfig(vocab_size=vocab, embed_dim=m.embed_dim, hidden_size=m.hidden_size,
                        num_layers=m.num_layers, dropout=m.dropout, unroll=m.unroll,
                        dtype=dtype, param_dtype=param_dtype)
    if m.type == "lstm_attention":
      return LSTMAttentionConfig(
          vocab_size=vocab, max_len=seq_len, max_source_len=source_len or seq_len,
          embed_dim=m.embed_dim, hidden_size=m.hidden_size, num_layers=m.num_layers,
          num_encoder_layers=m.num_encoder_layers or m.num_layers,
          bidirectional=m.bidirectional, attention=m.attention,
          share_embeddings=m.share_embeddings, dropout=m.dropout, unroll=m.unroll,
          dtype=dtype, param_dtype=param_dtype)
    if m.type in ("transformer", "encoder_decoder"):
      if m.attention_backend not in BACKENDS:
        raise UserError(f"model.attention_backend={m.attention_backend!r} is unknown; "
                        f"use one of {', '.join(BACKENDS)}")
      max_len = m.max_len or seq_len
      if seq_len > max_len:
        raise UserError(f"data.seq_len={seq_len} exceeds model.max_len={max_len}; "
                        "raise model.max_len or lower data.seq_len")
      decoder = TransformerConfig(
          vocab_size=vocab, max_len=max_len, num_layers=m.num_layers, num_heads=m.num_heads,
          embed_dim=m.embed_dim, num_kv_heads=m.num_kv_heads or None,
          head_dim=m.head_dim or None, mlp_dim=m.mlp_dim or None, position=m.position,
          rope_base=float(m.get("rope_base", 10000.0)), norm_eps=float(m.get("norm_eps", 1e-5)),
          norm=m.norm, mlp=m.mlp, use_bias=m.use_bias, dropout=m.dropout,
          tie_embeddings=m.tie_embeddings, scan_layers=m.scan_layers, remat=m.remat,
          attention_backend=m.attention_backend, dtype=dtype, param_dtype=param_dtype)
      if m.type == "transformer":
        return decoder
      max_source = m.max_source_len or source_len or seq_len
      if (source_len or seq_len) > max_source:
        raise UserError(f"data.source_len={source_len or seq_len} exceeds model.max_source_len="
                        f"{max_source}; raise model.max_source_len or lower data.source_len")
      return EncoderDecoderConfig(decoder=decoder,
                                  num_encoder_layers=m.num_encoder_layers or m.num_layers,
                                  max_source_len=max_source,
                                  share_embeddings=m.share_embeddings)
  except ValueError as e:  # the dataclasses' own checks
    raise UserError(f"bad model config: {e}") from None
  raise UserError(f"model.type={m.type!r} is unknown; use one of {', '.join(TYPES)}")


def create_model(cfg: ModelConfig, rngs: nnx.Rngs) -> Model:
  if isinstance(cfg, LSTMConfig):
    return LSTMLM(cfg, rngs=rngs)
  if isinstance(cfg, EncoderDecoderConfig):
    return EncoderDecoder(cfg, rngs=rngs)
  if isinstance(cfg, LSTMAttentionConfig):
    return LSTMAttention(cfg, rngs=rngs)
  return TransformerLM(cfg, rngs=rngs)


def context_limit(cfg: ModelConfig) -> int | None:
  """The longest sequence the model reads at once; None when unbounded (LSTM)."""
  return None if isinstance(cfg, LSTMConfig) else cfg.max_len


def padded_vocab_size(vocab_size: int, multiple: int) -> int:
  multiple = max(1, multiple)
  return -(-vocab_size // multiple) * multiple


def _dtype(m: ml_collections.ConfigDict, key: str):
  name = m.get(key, "float32")
  if name not in _DTYPES:
    raise UserError(f"model.{key}={name!r} is unknown; use one of {', '.join(_DTYPES)}")
  return _DTYPES[name]
