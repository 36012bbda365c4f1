"""Decoder-only Transformer language model (GPT-2 / Llama style, pre-norm).

Shapes: B batch, T length, D width, F MLP width, V vocabulary, L layers.
Dropout takes an explicit key (`dropout_rng`), so the model holds no RNG
state: a train step derives the key from the step number, which keeps runs
reproducible and resumable.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen import metrics
from jaxgen.errors import UserError
from jaxgen.models import feed_forward, layers, registry, stack
from jaxgen.models.attention import BACKENDS, Attention, AttentionConfig
from jaxgen.models.interface import DecoderOnly, HiddenStateDecoding
from jaxgen.models.params import num_values

REMAT_POLICIES = stack.REMAT_POLICIES


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_size: int  # already padded (a multiple of 128 keeps the head matmul fast)
  max_len: int  # longest sequence; size of the learned position table
  num_layers: int
  num_heads: int
  embed_dim: int
  num_kv_heads: int | None = None  # None: same as num_heads (no grouping)
  head_dim: int | None = None  # None: embed_dim // num_heads
  mlp_dim: int | None = None  # None: 4 * embed_dim
  position: str = "learned"  # 'learned' | 'rope'
  rope_base: float = 10000.0
  norm: str = "layernorm"  # 'layernorm' | 'rmsnorm'
  mlp: str = "gelu"  # 'gelu' | 'swiglu'
  use_bias: bool = False
  dropout: float = 0.0
  tie_embeddings: bool = True
  scan_layers: bool = False  # one compiled block body: faster compiles for deep models
  remat: str = "none"  # 'none' | 'full' | 'dots'
  attention_backend: str = "auto"
  dtype: jnp.dtype = jnp.float32  # compute dtype (bf16 on accelerators)
  param_dtype: jnp.dtype = jnp.float32  # master weights stay fp32
  norm_eps: float = 1e-5

  def __post_init__(self):
    _check_choice("model.position", self.position, ("learned", "rope"))
    _check_choice("model.norm", self.norm, ("layernorm", "rmsnorm"))
    _check_choice("model.mlp", self.mlp, feed_forward.KINDS)
    _check_choice("model.remat", self.remat, tuple(REMAT_POLICIES))
    if self.head_dim is None and self.embed_dim % self.num_heads:
      raise ValueError(f"model.embed_dim={self.embed_dim} is not divisible by "
                       f"model.num_heads={self.num_heads}; set model.head_dim")

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def head_size(self) -> int:
    return self.head_dim or self.embed_dim // self.num_heads

  @property
  def mlp_width(self) -> int:
    return self.mlp_dim or 4 * self.embed_dim

  def attention_config(self) -> AttentionConfig:
    return AttentionConfig(
        embed_dim=self.embed_dim, num_heads=self.num_heads, num_kv_heads=self.kv_heads,
        head_dim=self.head_size, use_rope=self.position == "rope", rope_base=self.rope_base,
        use_bias=self.use_bias, backend=self.attention_backend, dtype=self.dtype,
        param_dtype=self.param_dtype, out_init_std=self.out_init_std)

  @property
  def out_init_std(self) -> float:
    return 0.02 / math.sqrt(2 * self.num_layers)


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs, causal: bool = True):
    self.cfg = cfg
    self.attn_norm = stack.make_norm(cfg, rngs)
    self.attn = Attention(dataclasses.replace(cfg.attention_config(), causal=causal),
                          rngs=rngs)
    self.mlp_norm = stack.make_norm(cfg, rngs)
    self.mlp = feed_forward.make(cfg, rngs=rngs)

  def __call__(self, x_BTD, positions_BT, segment_ids_BT, dropout_rng):
    rng_attn, rng_mlp = stack.split_or_none(dropout_rng, 2)
    h_BTD = self.attn(self.attn_norm(x_BTD), positions_BT, segment_ids_BT)
    x_BTD = stack.residual(x_BTD, h_BTD, self.cfg.dropout, rng_attn)
    return stack.residual(x_BTD, self.mlp(self.mlp_norm(x_BTD)), self.cfg.dropout, rng_mlp)

  def decode(self, x_BTD, cache, index, lengths_B=None, layer=None):
    h_BTD, cache = self.attn.decode(self.attn_norm(x_BTD), cache, index, lengths_B, layer)
    x_BTD = x_BTD + h_BTD.astype(x_BTD.dtype)
    return x_BTD + self.mlp(self.mlp_norm(x_BTD)).astype(x_BTD.dtype), cache


class TransformerLM(DecoderOnly, HiddenStateDecoding, nnx.Module):
  """Token embedding, L blocks, final norm, (tied) output head."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = layers.Embed(cfg.vocab_size, cfg.embed_dim, cfg.param_dtype, rngs=rngs)
    if cfg.position == "learned":
      self.pos_embed = stack.position_table(cfg, cfg.max_len, rngs)
    self.blocks = stack.make_blocks(Block, cfg, rngs)
    self.final_norm = stack.make_norm(cfg, rngs)
    if not cfg.tie_embeddings:
      self.head = stack.output_head(cfg, rngs)

  def __call__(self, tokens_BT: jax.Array, *, positions_BT: jax.Array | None = None,
               segment_ids_BT: jax.Array | None = None,
               dropout_rng: jax.Array | None = None) -> jax.Array:
    """Float32 logits [B, T, V] for every position; `dropout_rng=None` disables dropout."""
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    rng_embed, rng_blocks = stack.split_or_none(dropout_rng, 2)
    x_BTD = self._embed(tokens_BT, positions_BT)
    x_BTD = layers.dropout(x_BTD, self.cfg.dropout, rng_embed)

    def block_fn(block, x_BTD, layer):
      rng = None if rng_blocks is None else jax.random.fold_in(rng_blocks, layer)
      return block(x_BTD, positions_BT, segment_ids_BT, rng)

    return self._logits(stack.run_blocks(self.cfg, self.blocks, block_fn, x_BTD))

  @property
  def context_len(self) -> int:
    """The longest sequence the model reads (its learned position table's size)."""
    return self.cfg.max_len

  def init_cache(self, batch_size: int, max_len: int | None = None, dtype=None) -> dict:
    """An empty key/value cache of `max_len` (default: the context) slots, `index` 0.

    `k`, `v`: see `stack.empty_kv`. `index` is the next position, shared by all
    rows; a `prefill` with per-row lengths makes it one per row ([B]).
    """
    empty = lambda: stack.empty_kv(self.cfg, batch_size, max_len, dtype)
    return {"k": empty(), "v": empty(), "index": jnp.zeros((), jnp.int32)}

  def _decode_hidden(self, tokens_BT, cache, lengths_B):
    """The final hidden states for tokens after the cache's contents, and the new cache."""
    return stack.decode_hidden(self.cfg, self.blocks, self._embed, tokens_BT, cache, lengths_B)

  def _embed(self, tokens_BT, positions_BT):
    pos_table = getattr(self, "pos_embed", None)
    return stack.embed(self.cfg, self.embed, pos_table, tokens_BT, positions_BT)

  def _logits(self, x_BTD):
    head = getattr(self, "head", None)
    return stack.logits(self.cfg, self.final_norm, self.embed, head, x_BTD)


# The family (jaxgen.models.registry): its config from config.model, its FLOPs.

# Which config key sets each logical axis's size, for `jaxgen plan`'s warnings.
AXIS_KEYS = {"heads": "model.num_heads", "kv_heads": "model.num_kv_heads",
             "mlp": "model.mlp_dim", "embed": "model.embed_dim",
             "vocab": "the padded vocabulary", "layers": "model.num_layers"}


def config_from(m, *, vocab_size: int, seq_len: int, source_len: int, dtype,
                param_dtype) -> TransformerConfig:
  """The config of `m` = config.model (also an encoder-decoder's decoder)."""
  del source_len  # a language model reads no source
  if m.attention_backend not in BACKENDS:
    raise UserError(f"model.attention_backend={m.attention_backend!r} is unknown; "
                    f"use one of {', '.join(BACKENDS)}")
  max_len = m.max_len or seq_len
  if seq_len > max_len:
    raise UserError(f"data.seq_len={seq_len} exceeds model.max_len={max_len}; "
                    "raise model.max_len or lower data.seq_len")
  return TransformerConfig(
      vocab_size=vocab_size, max_len=max_len, num_layers=m.num_layers, num_heads=m.num_heads,
      embed_dim=m.embed_dim, num_kv_heads=m.num_kv_heads or None,
      head_dim=m.head_dim or None, mlp_dim=m.mlp_dim or None, position=m.position,
      rope_base=float(m.get("rope_base", 10000.0)), norm_eps=float(m.get("norm_eps", 1e-5)),
      norm=m.norm, mlp=m.mlp, use_bias=m.use_bias, dropout=m.dropout,
      tie_embeddings=m.tie_embeddings, scan_layers=m.scan_layers, remat=m.remat,
      attention_backend=m.attention_backend, dtype=dtype, param_dtype=param_dtype)


def flops_per_token(cfg: TransformerConfig, params: nnx.State, seq_len: int,
                    source_len: int = 0) -> float:
  """6N + 12 L H Q T. Lookup tables do no matmul (nanoGPT leaves them out too):
  N counts neither the position table nor the token table, unless that is also
  the output head."""
  del source_len
  lookups = [params["pos_embed"]] if "pos_embed" in params else []
  if not cfg.tie_embeddings:
    lookups.append(params["embed"])
  n = num_values(params) - sum(num_values(v) for v in lookups)
  return metrics.flops_per_token(n, cfg.num_layers, cfg.num_heads, cfg.head_size, seq_len)


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not one of {choices}")


registry.register(registry.Family(
    name="transformer", config_type=TransformerConfig, build_config=config_from,
    model_type=TransformerLM, flops_per_token=flops_per_token, axis_keys=AXIS_KEYS))
