"""LSTM encoder-decoder with attention and input feeding (Bahdanau et al. 2015, Luong
et al. 2015).

Encoder: a multi-layer LSTM over the source, optionally bidirectional (the
backward direction reads each row's own tokens in reverse, so right padding
never reaches a real token's state). Its layers are the LM's `LSTMLayer`: the
input projection of all time steps is one matmul outside the time scan, and
the recurrence keeps its hand-written gradient.

Decoder: at step t the first layer reads [embedding of y_{t-1}; attentional
state a_{t-1}] (input feeding); the top layer's h_t attends over the encoder
outputs m_s with an additive score v . tanh(W_m m_s + W_q h_t) ('bahdanau')
or a multiplicative one h_t . W_a m_s ('luong'); a_t = tanh(W_c [context; h_t])
predicts y_t. Both score functions attend with the current h_t (Luong's order).
The embedding part of the first layer's input projection is hoisted out of
the time scan; the input-fed part and the upper layers depend on the step
before and run inside it. The source's projected keys (W_m m_s or W_a m_s)
are computed once per source and kept in the decoding cache.

Rows hold one pair each (padded, not packed: the recurrences would carry state
from one pair into the next).

Shapes: B batch, S source length, T target length, E embedding, H hidden,
M encoder output (H or 2H), G = 4H gates, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import layers, lstm, registry
from jaxgen.models.interface import Model
from jaxgen.parallel.activations import constrain
from jaxgen.models.lstm import TBG, LSTMConfig, LSTMLayer, _cell, _dot_rows, _gate_scale
from jaxgen.models.params import param

ATTENTION = ("bahdanau", "luong")


@dataclasses.dataclass(frozen=True)
class LSTMAttentionConfig:
  vocab_size: int  # already padded
  max_len: int  # the longest target (data.seq_len)
  max_source_len: int  # the longest source (data.source_len)
  embed_dim: int = 256
  hidden_size: int = 256
  num_layers: int = 2  # decoder
  num_encoder_layers: int = 2
  bidirectional: bool = True
  attention: str = "luong"  # 'luong' (multiplicative) | 'bahdanau' (additive)
  share_embeddings: bool = True
  dropout: float = 0.0
  unroll: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if self.attention not in ATTENTION:
      raise ValueError(f"model.attention={self.attention!r} is not one of {ATTENTION}")

  def lstm(self) -> LSTMConfig:
    return LSTMConfig(vocab_size=self.vocab_size, embed_dim=self.embed_dim,
                      hidden_size=self.hidden_size, dropout=self.dropout, dtype=self.dtype,
                      param_dtype=self.param_dtype, unroll=self.unroll)


class LSTMAttention(Model, nnx.Module):
  """Embeddings, (bi)LSTM encoder, input-feeding LSTM decoder with attention, head."""

  conditional = True

  def __init__(self, cfg: LSTMAttentionConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    lc = cfg.lstm()
    e, h = cfg.embed_dim, cfg.hidden_size
    dirs = 2 if cfg.bidirectional else 1
    m = dirs * h
    emb = lambda: param(rngs, nnx.initializers.normal(stddev=1.0), (cfg.vocab_size, e),
                        ("vocab", "embed"), cfg.param_dtype)
    self.embedding = emb()
    if not cfg.share_embeddings:
      self.source_embedding = emb()
    in_dims = [e] + [m] * (cfg.num_encoder_layers - 1)
    self.encoder = nnx.List([LSTMLayer(d, lc, rngs=rngs) for d in in_dims])
    self.encoder_bwd = nnx.List([LSTMLayer(d, lc, rngs=rngs) for d in in_dims]
                                if cfg.bidirectional else [])
    self.decoder = nnx.List([LSTMLayer(e, lc, rngs=rngs)] +
                            [LSTMLayer(h, lc, rngs=rngs) for _ in range(cfg.num_layers - 1)])
    init = nnx.initializers.lecun_normal()
    self.feed_w = param(rngs, init, (h, 4 * h), ("embed", "mlp"), cfg.param_dtype)
    if cfg.attention == "bahdanau":
      self.att_m = param(rngs, init, (m, h), ("mlp", "embed"), cfg.param_dtype)
      self.att_q = param(rngs, init, (h, h), ("embed", "mlp"), cfg.param_dtype)
      self.att_v = param(rngs, init, (h, 1), ("mlp", None), cfg.param_dtype)
    else:
      self.att_m = param(rngs, init, (m, h), ("mlp", "embed"), cfg.param_dtype)
    self.combine_w = param(rngs, init, (m + h, h), ("mlp", "embed"), cfg.param_dtype)
    self.head_w = param(rngs, init, (h, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype)
    self.head_b = param(rngs, nnx.initializers.zeros_init(), (cfg.vocab_size,), ("vocab",),
                        cfg.param_dtype)

  # The model interface (jaxgen.models.interface).

  def batch_outputs(self, batch: dict, *, dropout_rng: jax.Array | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One pair per row: source_segment_ids mark padding (0) only. No auxiliary losses."""
    if "positions" in batch or "source_positions" in batch:
      # Packed rows (several pairs each) would need every recurrence, the backward
      # encoder's reversal and the attention reset per pair; config_check refuses them.
      raise ValueError("LSTMAttention reads one pair per row, not packed rows")
    source_BS = batch["source"]
    seg_BS = batch.get("source_segment_ids", jnp.ones_like(source_BS))
    rng_enc, rng_dec = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
    cache = self._start(source_BS, seg_BS, rng_enc)
    logits_BTV, _ = self._decode(batch["inputs"], cache, None, rng_dec)
    return logits_BTV, {}

  @property
  def context_len(self) -> int:
    return self.cfg.max_len

  def init_decoding(self, batch_size: int, max_len: int | None = None, source=None) -> dict:
    """Encodes `source` = (tokens, segment ids) [B, S] once: the attention's memory and
    projected keys, a zero decoder state and a zero attentional state."""
    del batch_size, max_len  # the state does not grow with the output
    if source is None:
      raise ValueError("an encoder-decoder needs a source to decode from")
    return self._start(*source, None)

  def decode(self, tokens_BT: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
    return self._decode(tokens_BT, cache, None, None)

  def prefill(self, tokens_BT, lengths_B, cache):
    valid_TB = jnp.arange(tokens_BT.shape[1])[:, None] < lengths_B
    logits_BTV, cache = self._decode(tokens_BT, cache, valid_TB, None)
    last_B = jnp.maximum(lengths_B - 1, 0)
    return jnp.take_along_axis(logits_BTV, last_B[:, None, None], axis=1)[:, 0], cache

  # Encoder.

  def _start(self, source_BS, segment_ids_BS, dropout_rng) -> dict:
    cfg = self.cfg
    dt = cfg.dtype
    table = self.embedding if cfg.share_embeddings else self.source_embedding
    x_TBD = _time_major(jnp.take(_rows(table, dt), source_BS.T, axis=0, mode="clip"))
    x_TBD = layers.dropout(x_TBD, cfg.dropout, dropout_rng)
    lengths_B = (segment_ids_BS != 0).sum(-1)
    b, s = source_BS.shape
    t_TB = jnp.arange(s)[:, None]
    # Row-wise reversal of each row's first lengths_B steps (padding stays put).
    reverse_TB = jnp.where(t_TB < lengths_B, lengths_B - 1 - t_TB, t_TB)
    zero = (jnp.zeros((b, cfg.hidden_size), jnp.float32),) * 2
    for i, fwd in enumerate(self.encoder):
      h_TBH, _ = fwd.recur(fwd.project(x_TBD), zero)
      if cfg.bidirectional:
        bwd = self.encoder_bwd[i]
        x_rev = jnp.take_along_axis(x_TBD, reverse_TB[:, :, None], axis=0)
        h_rev, _ = bwd.recur(bwd.project(x_rev), zero)
        h_TBH = jnp.concatenate(
            [h_TBH, jnp.take_along_axis(h_rev, reverse_TB[:, :, None], axis=0)], axis=-1)
      x_TBD = _time_major(h_TBH.astype(dt))
      if dropout_rng is not None:
        x_TBD = layers.dropout(x_TBD, cfg.dropout, jax.random.fold_in(dropout_rng, i + 1))
    memory_BSM = constrain(jnp.swapaxes(x_TBD, 0, 1), _BSX)
    keys_BSH = jnp.einsum("BSM,MH->BSH", memory_BSM, _whole(self.att_m, dt),
                          preferred_element_type=jnp.float32).astype(dt)
    keys_BSH = constrain(keys_BSH, _BSX)
    carry = tuple((jnp.zeros((b, cfg.hidden_size), jnp.float32),) * 2
                  for _ in range(cfg.num_layers))
    return {"carry": carry, "feed": jnp.zeros((b, cfg.hidden_size), jnp.float32),
            "memory": memory_BSM, "keys": keys_BSH, "mask": segment_ids_BS != 0}

  # Decoder.

  def _decode(self, tokens_BT, cache, valid_TB, dropout_rng):
    """Logits [B, T, V] for tokens after the cache's state, and the new state; with
    `valid_TB` a row's state only advances at its valid steps."""
    cfg = self.cfg
    dt = cfg.dtype
    x_TBE = _time_major(jnp.take(_rows(self.embedding, dt), tokens_BT.T, axis=0,
                                 mode="clip"))
    if dropout_rng is not None:
      x_TBE = layers.dropout(x_TBE, cfg.dropout, jax.random.fold_in(dropout_rng, 0))
    first = self.decoder[0]
    # hoisted: the embedding part of layer 1's input
    gates_TBG = _time_major(first.project(x_TBE))
    # Weights gathered whole once, before the time loop, not inside every step (only
    # the batch is split in the loop, as in the LM's LSTM).
    w_hh = [_whole(layer.w_hh, dt) for layer in self.decoder]
    w_ih = [_whole(layer.w_ih, dt) for layer in self.decoder]
    bias = [_whole(layer.bias, jnp.float32) for layer in self.decoder]
    scale_G = _gate_scale(cfg.hidden_size)
    feed_w, combine_w = _whole(self.feed_w, dt), _whole(self.combine_w, dt)
    memory_BSM, keys_BSH, mask_BS = cache["memory"], cache["keys"], cache["mask"]
    att_q = _whole(self.att_q, dt) if cfg.attention == "bahdanau" else None
    att_v = _whole(self.att_v, dt) if cfg.attention == "bahdanau" else None
    t = tokens_BT.shape[1]
    valid = jnp.ones((t, tokens_BT.shape[0]), bool) if valid_TB is None else valid_TB

    def step(state, xs):
      carry, feed_BH = state
      gates_BG, valid_B = xs
      gates_BG = gates_BG + jnp.dot(feed_BH.astype(dt), feed_w,
                                    preferred_element_type=jnp.float32)
      new_carry, x_BH = [], None
      for i, (h_BH, c_BH) in enumerate(carry):
        if i > 0:
          gates_BG = jnp.dot(x_BH.astype(dt), w_ih[i],
                             preferred_element_type=jnp.float32) + bias[i]
        h_BH, c_BH, _ = _cell(gates_BG, h_BH, c_BH, w_hh[i], scale_G)
        new_carry.append((h_BH, c_BH))
        x_BH = h_BH
      q_BH = x_BH.astype(dt)
      if cfg.attention == "bahdanau":
        hidden_BSH = jnp.tanh(keys_BSH.astype(jnp.float32) + jnp.dot(
            q_BH, att_q, preferred_element_type=jnp.float32)[:, None])
        scores_BS = jnp.einsum("BSH,H->BS", hidden_BSH.astype(dt), att_v[:, 0],
                               preferred_element_type=jnp.float32)
      else:
        scores_BS = jnp.einsum("BSH,BH->BS", keys_BSH, q_BH,
                               preferred_element_type=jnp.float32)
      scores_BS = jnp.where(mask_BS, scores_BS, jnp.finfo(jnp.float32).min)
      probs_BS = jax.nn.softmax(scores_BS, axis=-1)
      context_BM = jnp.einsum("BS,BSM->BM", probs_BS.astype(dt), memory_BSM,
                              preferred_element_type=jnp.float32)
      a_BH = jnp.tanh(jnp.dot(jnp.concatenate([context_BM, x_BH], -1).astype(dt), combine_w,
                              preferred_element_type=jnp.float32))
      keep = valid_B[:, None]
      new_carry = tuple((jnp.where(keep, h, ho), jnp.where(keep, c, co))
                        for (h, c), (ho, co) in zip(new_carry, carry))
      return (new_carry, jnp.where(keep, a_BH, feed_BH)), a_BH.astype(dt)

    (carry, feed), a_TBH = jax.lax.scan(step, (cache["carry"], cache["feed"]),
                                        (gates_TBG, valid), unroll=cfg.unroll)
    a_TBH = _time_major(a_TBH)
    if dropout_rng is not None:
      a_TBH = layers.dropout(a_TBH, cfg.dropout, jax.random.fold_in(dropout_rng, 1))
    logits_TBV = _dot_rows(a_TBH, self.head_w[...].astype(dt))
    logits_TBV = constrain(logits_TBV + self.head_b[...].astype(jnp.float32),
                           ("length", "batch", "vocab"))
    logits_BTV = jnp.swapaxes(logits_TBV, 0, 1)
    return logits_BTV, dict(cache, carry=carry, feed=feed)


# The family (jaxgen.models.registry): its config from config.model, its FLOPs.


def config_from(m, *, vocab_size: int, seq_len: int, source_len: int, dtype,
                param_dtype) -> LSTMAttentionConfig:
  return LSTMAttentionConfig(
      vocab_size=vocab_size, max_len=seq_len, max_source_len=source_len,
      embed_dim=m.embed_dim, hidden_size=m.hidden_size, num_layers=m.num_layers,
      num_encoder_layers=m.num_encoder_layers or m.num_layers,
      bidirectional=m.bidirectional, attention=m.attention,
      share_embeddings=m.share_embeddings, dropout=m.dropout, unroll=m.unroll,
      dtype=dtype, param_dtype=param_dtype)


# Logical names of activations (see jaxgen/parallel/activations.py): the batch is split, the
# time and feature axes stay whole, as in the LM's LSTM (jaxgen/models/lstm.py).
_BSX = ("batch", "length", None)


def _time_major(x_TBX: jax.Array) -> jax.Array:
  return constrain(x_TBX, TBG)


def _rows(table, dtype) -> jax.Array:
  """An embedding table with whole rows, looked up where its vocabulary shard lives."""
  return constrain(table[...].astype(dtype), ("vocab", None))


def _whole(weight, dtype) -> jax.Array:
  return constrain(weight[...].astype(dtype), (None,) * weight[...].ndim)


registry.register(registry.Family(
    name="lstm_attention", config_type=LSTMAttentionConfig, build_config=config_from,
    model_type=LSTMAttention,
    # The LSTM LM's 6N, every parameter per target token: the encoder's share is not
    # scaled by source/target length, and the attention's own FLOPs are left out.
    flops_per_token=lstm.flops_per_token))
