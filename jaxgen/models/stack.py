"""The layer stack shared by the Transformer LM and the encoder-decoder: blocks (a list,
or stacked on a 'layers' axis and scanned), their remat, embedding, output head, and
decoding through the key/value cache.

A model's blocks take its TransformerConfig (`cfg`): `num_layers`, `scan_layers`,
`remat`, `position`, `tie_embeddings`, `dtype`, ...

Shapes: B batch, T length, D width, V vocabulary, L layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import kv_cache, layers
from jaxgen.parallel.activations import constrain

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    # Keep matmul outputs, recompute the cheap elementwise work.
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

# Cache entries with one value per layer (a tuple, or stacked [L, ...] when scanned);
# any other entry (the source mask, the encoder output) is shared by all layers.
PER_LAYER = ("k", "v", "ck", "cv")


def make_blocks(block_cls, cfg, rngs: nnx.Rngs):
  """`cfg.num_layers` blocks: a list, or stacked on a leading 'layers' axis when scanned."""
  if not cfg.scan_layers:
    return nnx.List([block_cls(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
  keys = jax.random.split(rngs.params(), cfg.num_layers)

  @nnx.vmap(in_axes=0, out_axes=0,
            transform_metadata={nnx.PARTITION_NAME: "layers", "logical_axes": "layers"})
  def create(key):
    return block_cls(cfg, rngs=nnx.Rngs(params=key))

  return create(keys)


def run_blocks(cfg, blocks, block_fn, x_BTD):
  """`block_fn(block, x_BTD, layer)` through every block (one scanned body with
  `scan_layers`), rematerialised as `cfg.remat` says."""

  def make_apply(graphdef):
    def apply(layer_state, x_BTD, layer):
      return block_fn(nnx.merge(graphdef, layer_state), x_BTD, layer)
    if cfg.remat == "none":
      return apply
    return jax.checkpoint(apply, policy=REMAT_POLICIES[cfg.remat])

  if cfg.scan_layers:
    graphdef, state = nnx.split(blocks)
    apply = make_apply(graphdef)

    def body(x_BTD, xs):
      layer_state, layer = xs
      return apply(layer_state, x_BTD, layer), None

    x_BTD, _ = jax.lax.scan(body, x_BTD, (state, jnp.arange(cfg.num_layers)))
    return x_BTD
  for i, block in enumerate(blocks):
    graphdef, layer_state = nnx.split(block)
    x_BTD = make_apply(graphdef)(layer_state, x_BTD, i)
  return x_BTD


def decode_hidden(cfg, blocks, embed_fn, tokens_BT, cache: dict, lengths_B):
  """Final hidden states [B, T, D] for tokens after the cache's contents, and the new
  cache (index advanced by T, or by each row's `lengths_B`).

  `embed_fn(tokens_BT, positions_BT)` embeds; each block's `decode(x_BTD, layer_cache,
  index, lengths_B, layer)` returns its output and its layer's cache.
  """
  index = cache["index"]
  b, t = tokens_BT.shape
  positions_BT = jnp.broadcast_to(jnp.expand_dims(index, -1) + jnp.arange(t), (b, t))
  x_BTD = embed_fn(tokens_BT, positions_BT)
  layer_cache = {n: v for n, v in cache.items() if n != "index"}
  if cfg.scan_layers:
    graphdef, state = nnx.split(blocks)

    # The stacked cache rides in the carry, so each layer writes its new
    # keys/values in place; reading them takes a slice of its layer.
    def body(carry, xs):
      x_BTD, c = carry
      layer_state, layer = xs
      return nnx.merge(graphdef, layer_state).decode(x_BTD, c, index, lengths_B, layer), None

    (x_BTD, layer_cache), _ = jax.lax.scan(body, (x_BTD, layer_cache),
                                           (state, jnp.arange(cfg.num_layers)))
  else:
    per_layer = [n for n in PER_LAYER if n in layer_cache]
    outs = {n: [] for n in per_layer}
    for i, block in enumerate(blocks):
      one = {n: (v[i] if n in per_layer else v) for n, v in layer_cache.items()}
      x_BTD, one = block.decode(x_BTD, one, index, lengths_B)
      for n in per_layer:
        outs[n].append(one[n])
    layer_cache = dict(layer_cache, **{n: tuple(v) for n, v in outs.items()})
  advance = t if lengths_B is None else lengths_B
  return x_BTD, dict(cache, **layer_cache, index=index + advance)


def empty_kv(cfg, batch_size: int, max_len: int | None = None, dtype=None):
  """One empty key (or value) cache: a `kv_cache` buffer [B*K, S, H] per layer (a tuple),
  or with `scan_layers` one [L, B*K, S, H] buffer, which the layer scan carries."""
  args = (batch_size, cfg.kv_heads, max_len or cfg.max_len, cfg.head_size, dtype or cfg.dtype)
  if cfg.scan_layers:
    return kv_cache.empty(*args, num_layers=cfg.num_layers)
  return tuple(kv_cache.empty(*args) for _ in range(cfg.num_layers))


def position_table(cfg, length: int, rngs: nnx.Rngs) -> nnx.Param:
  """A learned position table [length, D]."""
  return layers.param(rngs, nnx.initializers.normal(0.02), (length, cfg.embed_dim),
                      (None, "embed"), cfg.param_dtype)


def output_head(cfg, rngs: nnx.Rngs) -> nnx.Param:
  """The untied output head [D, V]."""
  return layers.param(rngs, nnx.initializers.normal(0.02), (cfg.embed_dim, cfg.vocab_size),
                      ("embed", "vocab"), cfg.param_dtype)


def embed(cfg, table: layers.Embed, pos_table, tokens_BT, positions_BT) -> jax.Array:
  """Token embeddings plus, with learned positions, `pos_table`'s rows, in `cfg.dtype`."""
  x_BTD = table(tokens_BT).astype(cfg.dtype)
  if cfg.position == "learned":
    # "clip": a padding token's position may run past the table when decoding.
    # Whole rows for the lookup, as in layers.Embed.
    table_PD = constrain(pos_table[...], (None, None))
    x_BTD += jnp.take(table_PD, positions_BT, axis=0, mode="clip").astype(cfg.dtype)
  return constrain(x_BTD, layers.BTD)


def logits(cfg, final_norm, table: layers.Embed, head, x_BTD) -> jax.Array:
  """Float32 logits [B, T, V]: the final norm, then the tied table or `head`."""
  x_BTD = final_norm(x_BTD)
  if cfg.tie_embeddings:
    logits_BTV = table.attend(x_BTD)
  else:
    logits_BTV = jnp.einsum("BTD,DV->BTV", x_BTD.astype(cfg.dtype), head[...].astype(cfg.dtype),
                            preferred_element_type=jnp.float32)
  return constrain(logits_BTV, ("batch", "length", "vocab"))


def make_norm(cfg, rngs: nnx.Rngs):
  return layers.make_norm(cfg.norm, cfg.embed_dim, cfg.use_bias, cfg.norm_eps,
                          cfg.param_dtype, rngs)


def residual(x_BTD, h_BTD, rate: float, dropout_rng) -> jax.Array:
  """x + dropout(h) in x's dtype, constrained as the residual stream."""
  x_BTD = x_BTD + layers.dropout(h_BTD, rate, dropout_rng).astype(x_BTD.dtype)
  return constrain(x_BTD, layers.BTD)


def split_or_none(rng, n):
  """`n` keys from `rng`, or n Nones when dropout is off (`rng` None)."""
  return (None,) * n if rng is None else tuple(jax.random.split(rng, n))
