"""Transformer encoder-decoder (Vaswani et al. 2017, pre-norm) for conditional generation.

The encoder is a stack of non-causal self-attention blocks over the source,
masked by source segment ids (0 = padding, so no token attends into padding
or, when packed, into another example). The decoder is the LM's causal
block with a cross-attention sub-layer between self-attention and MLP. The
layers, norms, MLPs, positions, dtypes, scan/remat options and logical axis
names are the decoder-only Transformer's, so both shard by the same rules; the
stacks, embedding, head and cached decoding are stack.py's, shared with it.

Shapes: B batch, S source length, T target length, D width, V vocabulary,
K key/value heads, H head size, L layers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen import metrics
from jaxgen.errors import UserError
from jaxgen.models import feed_forward, layers, registry, stack, transformer
from jaxgen.models.attention import Attention
from jaxgen.models.attention_core import segment_mask
from jaxgen.models.interface import HiddenStateDecoding, Model
from jaxgen.models.params import num_values
from jaxgen.models.transformer import Block, TransformerConfig


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
  """The decoder's shape is `decoder` (its `max_len` is the longest target); the
  encoder has the same width and heads, `num_encoder_layers` blocks and reads
  sources of up to `max_source_len` tokens."""
  decoder: TransformerConfig
  num_encoder_layers: int
  max_source_len: int
  share_embeddings: bool = True  # one token table for source and target (one vocabulary)
  # Decoding keeps each layer's cross-attention keys/values of the source. False keeps
  # only the encoder output and projects it again at every step: the baseline that
  # benchmarks/seq2seq_decode_throughput.py measures the cache against.
  cache_cross_kv: bool = True

  @property
  def max_len(self) -> int:
    return self.decoder.max_len

  @property
  def vocab_size(self) -> int:
    return self.decoder.vocab_size

  @property
  def encoder(self) -> TransformerConfig:
    return dataclasses.replace(self.decoder, num_layers=self.num_encoder_layers,
                               max_len=self.max_source_len)


class EncoderBlock(Block):
  """The LM's pre-norm block without a causal mask: x + attn(norm(x)), x + mlp(norm(x))."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    super().__init__(cfg, rngs=rngs, causal=False)


class DecoderBlock(nnx.Module):
  """Causal self-attention, cross-attention to the encoder, MLP; each pre-norm residual."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.attn_norm = stack.make_norm(cfg, rngs)
    self.attn = Attention(cfg.attention_config(), rngs=rngs)
    self.cross_norm = stack.make_norm(cfg, rngs)
    self.cross = Attention(dataclasses.replace(cfg.attention_config(), use_rope=False,
                                               causal=False), rngs=rngs)
    self.mlp_norm = stack.make_norm(cfg, rngs)
    self.mlp = feed_forward.make(cfg, rngs=rngs)

  def __call__(self, x_BTD, positions_BT, segment_ids_BT, memory, dropout_rng):
    """`memory` = (encoder output [B, S, D], cross mask [B, 1, T, S])."""
    memory_BSD, mask_B1TS = memory
    rngs = stack.split_or_none(dropout_rng, 3)
    h_BTD = self.attn(self.attn_norm(x_BTD), positions_BT, segment_ids_BT)
    x_BTD = stack.residual(x_BTD, h_BTD, self.cfg.dropout, rngs[0])
    k_BKSH, v_BKSH = self.cross.cross_kv(memory_BSD)
    h_BTD = self.cross.cross(self.cross_norm(x_BTD), k_BKSH, v_BKSH, mask_B1TS)
    x_BTD = stack.residual(x_BTD, h_BTD, self.cfg.dropout, rngs[1])
    return stack.residual(x_BTD, self.mlp(self.mlp_norm(x_BTD)), self.cfg.dropout, rngs[2])

  def decode(self, x_BTD, cache, index, lengths_B=None, layer=None):
    """One decoding call: self-attention through the key/value cache, cross-attention
    to the cache's precomputed source keys/values (`ck`, `cv` [B, K, S, H])."""
    h_BTD, kv = self.attn.decode(self.attn_norm(x_BTD), {"k": cache["k"], "v": cache["v"]},
                                 index, lengths_B, layer)
    x_BTD = x_BTD + h_BTD.astype(x_BTD.dtype)
    if "memory" in cache:  # no cross cache: project the encoder output again
      ck, cv = self.cross.cross_kv(cache["memory"])
    else:
      ck, cv = (cache[n] if layer is None else cache[n][layer] for n in ("ck", "cv"))
    h_BTD = self.cross.cross(self.cross_norm(x_BTD), ck, cv, cache["mask"])
    x_BTD = x_BTD + h_BTD.astype(x_BTD.dtype)
    x_BTD = x_BTD + self.mlp(self.mlp_norm(x_BTD)).astype(x_BTD.dtype)
    return x_BTD, dict(cache, k=kv["k"], v=kv["v"])


class EncoderDecoder(Model, HiddenStateDecoding, nnx.Module):
  """Embeddings (shared or separate), encoder, decoder, final norms, (tied) head."""

  conditional = True

  def __init__(self, cfg: EncoderDecoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dec, enc = cfg.decoder, cfg.encoder
    self.embed = layers.Embed(dec.vocab_size, dec.embed_dim, dec.param_dtype, rngs=rngs)
    if not cfg.share_embeddings:
      self.source_embed = layers.Embed(dec.vocab_size, dec.embed_dim, dec.param_dtype,
                                       rngs=rngs)
    if dec.position == "learned":
      self.source_pos_embed = stack.position_table(dec, cfg.max_source_len, rngs)
      self.pos_embed = stack.position_table(dec, dec.max_len, rngs)
    self.encoder_blocks = stack.make_blocks(EncoderBlock, enc, rngs)
    self.encoder_norm = stack.make_norm(enc, rngs)
    self.blocks = stack.make_blocks(DecoderBlock, dec, rngs)
    self.final_norm = stack.make_norm(dec, rngs)
    if not dec.tie_embeddings:
      self.head = stack.output_head(dec, rngs)

  # The model interface (jaxgen.models.interface).

  def batch_outputs(self, batch: dict, *, dropout_rng: jax.Array | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Teacher-forced logits [B, T, V] for `batch["inputs"]` given `batch["source"]`;
    no auxiliary losses."""
    return self(batch["source"], batch["inputs"],
                source_segment_ids_BS=batch.get("source_segment_ids"),
                segment_ids_BT=batch.get("segment_ids"),
                source_positions_BS=batch.get("source_positions"),
                positions_BT=batch.get("positions"), dropout_rng=dropout_rng), {}

  def __call__(self, source_BS, tokens_BT, *, source_segment_ids_BS=None, segment_ids_BT=None,
               source_positions_BS=None, positions_BT=None, dropout_rng=None) -> jax.Array:
    if source_segment_ids_BS is None:
      source_segment_ids_BS = jnp.ones_like(source_BS)
    if segment_ids_BT is None:
      segment_ids_BT = jnp.ones_like(tokens_BT)
    rng_enc, rng_dec, rng_embed = stack.split_or_none(dropout_rng, 3)
    memory_BSD = self.encode(source_BS, source_segment_ids_BS, source_positions_BS, rng_enc)
    # A target token sees the source tokens of its own example (segment) only.
    mask_B1TS = segment_mask(segment_ids_BT, source_segment_ids_BS)
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    x_BTD = self._embed(self.embed, tokens_BT, positions_BT, "pos_embed")
    x_BTD = layers.dropout(x_BTD, self.cfg.decoder.dropout, rng_embed)

    def block_fn(block, x_BTD, layer):
      rng = None if rng_dec is None else jax.random.fold_in(rng_dec, layer)
      return block(x_BTD, positions_BT, segment_ids_BT, (memory_BSD, mask_B1TS), rng)

    return self._logits(stack.run_blocks(self.cfg.decoder, self.blocks, block_fn, x_BTD))

  def encode(self, source_BS, source_segment_ids_BS, source_positions_BS=None,
             dropout_rng=None) -> jax.Array:
    """The encoder's output [B, S, D] (after its final norm)."""
    if source_positions_BS is None:
      source_positions_BS = jnp.broadcast_to(jnp.arange(source_BS.shape[1]), source_BS.shape)
    table = self.embed if self.cfg.share_embeddings else self.source_embed
    x_BSD = self._embed(table, source_BS, source_positions_BS, "source_pos_embed")
    rng_embed, rng_blocks = stack.split_or_none(dropout_rng, 2)
    x_BSD = layers.dropout(x_BSD, self.cfg.decoder.dropout, rng_embed)

    def block_fn(block, x_BSD, layer):
      rng = None if rng_blocks is None else jax.random.fold_in(rng_blocks, layer)
      return block(x_BSD, source_positions_BS, source_segment_ids_BS, rng)

    return self.encoder_norm(stack.run_blocks(self.cfg.encoder, self.encoder_blocks, block_fn,
                                              x_BSD))

  @property
  def context_len(self) -> int:
    """The longest target the decoder reads."""
    return self.cfg.max_len

  def init_decoding(self, batch_size: int, max_len: int | None = None,
                    source=None) -> dict:
    """The decoding cache: empty self-attention keys/values (as the LM's), and the
    cross-attention keys/values of the encoded `source` = (tokens, segment ids)
    [B, S], computed here once for all steps (and beams)."""
    if source is None:
      raise ValueError("an encoder-decoder needs a source to decode from")
    source_BS, source_segment_ids_BS = source
    dec = self.cfg.decoder
    memory_BSD = self.encode(source_BS, source_segment_ids_BS)
    empty = lambda: stack.empty_kv(dec, batch_size, max_len)
    if not self.cfg.cache_cross_kv:
      cross = {"memory": memory_BSD}
    elif dec.scan_layers:
      graphdef, state = nnx.split(self.blocks)
      ck, cv = jax.vmap(lambda s: nnx.merge(graphdef, s).cross.cross_kv(memory_BSD))(state)
      cross = {"ck": ck, "cv": cv}
    else:
      ck, cv = (tuple(x) for x in zip(*(b.cross.cross_kv(memory_BSD) for b in self.blocks)))
      cross = {"ck": ck, "cv": cv}
    mask_B11S = (source_segment_ids_BS != 0)[:, None, None, :]  # [B, 1, T=1, S]
    return {"k": empty(), "v": empty(), **cross, "mask": mask_B11S,
            "index": jnp.zeros((), jnp.int32)}

  def _decode_hidden(self, tokens_BT, cache, lengths_B):
    embed_fn = lambda t, p: self._embed(self.embed, t, p, "pos_embed")
    return stack.decode_hidden(self.cfg.decoder, self.blocks, embed_fn, tokens_BT, cache,
                               lengths_B)

  def _embed(self, table, tokens_BT, positions_BT, pos_name):
    pos_table = getattr(self, pos_name, None)
    return stack.embed(self.cfg.decoder, table, pos_table, tokens_BT, positions_BT)

  def _logits(self, x_BTD):
    head = getattr(self, "head", None)
    return stack.logits(self.cfg.decoder, self.final_norm, self.embed, head, x_BTD)


# The family (jaxgen.models.registry): its config from config.model, its FLOPs.


def config_from(m, *, vocab_size: int, seq_len: int, source_len: int, dtype,
                param_dtype) -> EncoderDecoderConfig:
  """The config of `m` = config.model: the decoder's keys as a 'transformer' reads
  them, plus the encoder's depth and source length."""
  decoder = transformer.config_from(m, vocab_size=vocab_size, seq_len=seq_len,
                                    source_len=source_len, dtype=dtype,
                                    param_dtype=param_dtype)
  max_source = m.max_source_len or source_len
  if source_len > max_source:
    raise UserError(f"data.source_len={source_len} exceeds model.max_source_len="
                    f"{max_source}; raise model.max_source_len or lower data.source_len")
  return EncoderDecoderConfig(decoder=decoder,
                              num_encoder_layers=m.num_encoder_layers or m.num_layers,
                              max_source_len=max_source, share_embeddings=m.share_embeddings)


def flops_per_token(cfg: EncoderDecoderConfig, params: nnx.State, seq_len: int,
                    source_len: int) -> float:
  """Training FLOPs per target token, T = `seq_len` of them per row and S =
  `source_len` source tokens.

  As the LM's (6N + attention, lookup tables left out), with each parameter
  counted over the tokens it multiplies: the encoder's, and the cross-attention
  key/value projections (of the encoder's output), over S source tokens, the
  rest over T target tokens; self-attention over T (decoder) or S (encoder)
  positions, cross-attention over S. The source's share is then per target token.
  """
  dec, t, s = cfg.decoder, seq_len, source_len
  lookups = sum(num_values(params[k]) for k in ("pos_embed", "source_pos_embed", "source_embed")
                if k in params)
  if not dec.tie_embeddings:  # else the table is also the output head
    lookups += num_values(params["embed"])
  per_source = (num_values(params["encoder_blocks"]) + num_values(params["encoder_norm"])
                + _cross_kv_values(params["blocks"]))
  per_target = num_values(params) - lookups - per_source
  source = metrics.flops_per_token(per_source, cfg.num_encoder_layers, dec.num_heads,
                                   dec.head_size, s)
  target = metrics.flops_per_token(per_target, dec.num_layers, dec.num_heads, dec.head_size,
                                   t + s)
  return target + source * s / t


def _cross_kv_values(blocks: nnx.State) -> int:
  """The values of the decoder's cross-attention key/value projections (and biases)."""
  is_var = lambda x: isinstance(x, nnx.Variable)
  n = 0
  for path, var in jax.tree_util.tree_flatten_with_path(blocks, is_leaf=is_var)[0]:
    names = [str(getattr(p, "key", p)) for p in path]
    if "cross" in names and names[-1] in ("wk", "wv", "bk", "bv"):
      n += num_values(var)
  return n


registry.register(registry.Family(
    name="encoder_decoder", config_type=EncoderDecoderConfig, build_config=config_from,
    model_type=EncoderDecoder, flops_per_token=flops_per_token,
    # The encoder's and the decoder's stacks differ in depth: 'layers' names neither key.
    axis_keys={k: v for k, v in transformer.AXIS_KEYS.items() if k != "layers"}))
