"""The decoding key/value cache: one buffer per layer, written in place, read once per step.

One layer's keys (and likewise values) are [Z, S, H], Z = B*K: rows and
key/value heads in one leading axis, heads-major, which is how the attention
matmuls read them, without a transposed copy. (With [B, K, S, H], XLA on CPU
drops a batch of 1 by a bitcast of the freshly written buffer, fuses the write
twice, and copies the cache every step.) A scanned model keeps all layers' as
[L, Z, S, H], carried through its layer scan. A step writes only its new
tokens' keys/values, in place (`dynamic_update_slice` at a position shared by
all rows, a scatter for per-row positions), and its attention
(attention_core.dot_product_attention) reads the buffer once, masked: a
step's cost does not depend on how many tokens came before it.

Reading only the filled part was measured and not kept: XLA on CPU copies
any slice of a buffer, so it needs the cache split into separate blocks and a
`lax.cond` per block. With blocks of 64 (context 256, 2 busy cores, fp32) a
batch-64 step got ~15-20% faster, but the first call (mostly compiling) took
9-10 s against 4.5-5.5 s, and a batch-1 step pays for the extra ops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def empty(batch_size: int, kv_heads: int, length: int, head_dim: int, dtype,
          num_layers: int | None = None) -> jax.Array:
  """A zero buffer of `length` slots, with a leading layer axis if `num_layers`."""
  lead = () if num_layers is None else (num_layers,)
  return jnp.zeros(lead + (batch_size * kv_heads, length, head_dim), dtype)


def write(cache: jax.Array, new_BTKH: jax.Array, index: jax.Array, positions_BT: jax.Array,
          lengths_B: jax.Array | None = None, layer: jax.Array | None = None) -> jax.Array:
  """The cache with `new_BTKH` at `positions_BT` = index + 0..T-1 (only each row's
  first `lengths_B` tokens; all if None), in layer `layer` of a stacked cache."""
  b, t, k, h = new_BTKH.shape
  new_ZTH = new_BTKH.astype(cache.dtype).transpose(0, 2, 1, 3).reshape(b * k, t, h)
  lead = () if layer is None else (layer,)
  if jnp.ndim(index) == 0 and lengths_B is None:
    new = new_ZTH[(None,) * len(lead)]
    return jax.lax.dynamic_update_slice(cache, new, lead + (0, index, 0))
  slots_BT = positions_BT
  if lengths_B is not None:  # padding goes to slot S: out of range, dropped
    slots_BT = jnp.where(jnp.arange(t) < lengths_B[:, None], slots_BT, cache.shape[-2])
  slots_ZT = jnp.repeat(slots_BT, k, axis=0)
  rows_ZT = jnp.broadcast_to(jnp.arange(b * k)[:, None], (b * k, t))
  return cache.at[lead + (rows_ZT, slots_ZT)].set(new_ZTH, mode="drop")

