"""The decoding key/value cache: one buffer per layer, written in place, read once per step.

One layer's keys (and likewise values) are [B, K, S, H]; a scanned model keeps
all layers' as [L, B, K, S, H], carried through its layer scan. Heads-major is
the layout the attention matmuls read without a transposed copy. A step
writes only its new tokens' keys/values, in place (`dynamic_update_slice` at a
position shared by all rows, a scatter for per-row positions), and its
attention reads the buffer once, masked: a step's cost does not depend on how
many tokens came before it.

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
  return jnp.zeros(lead + (batch_size, kv_heads, length, head_dim), dtype)


def write(cache: jax.Array, new_BTKH: jax.Array, index: jax.Array, positions_BT: jax.Array,
          lengths_B: jax.Array | None = None, layer: jax.Array | None = None) -> jax.Array:
  """The cache with `new_BTKH` at `positions_BT` = index + 0..T-1 (only each row's
  first `lengths_B` tokens; all if None), in layer `layer` of a stacked cache."""
  new_BTKH = new_BTKH.astype(cache.dtype)
  lead = () if layer is None else (layer,)
  if jnp.ndim(index) == 0 and lengths_B is None:
    new = new_BTKH.transpose(0, 2, 1, 3)[(None,) * len(lead)]
    return jax.lax.dynamic_update_slice(cache, new, lead + (0, 0, index, 0))
  b, t = positions_BT.shape
  slots_BT = positions_BT
  if lengths_B is not None:  # padding goes to slot S: out of range, dropped
    slots_BT = jnp.where(jnp.arange(t) < lengths_B[:, None], slots_BT, cache.shape[-2])
  rows_BT = jnp.broadcast_to(jnp.arange(b)[:, None], (b, t))
  return cache.at[lead + (rows_BT, slice(None), slots_BT)].set(new_BTKH, mode="drop")


def attend(q_BTNH: jax.Array, k_cache: jax.Array, v_cache: jax.Array, positions_BT: jax.Array,
           layer: jax.Array | None = None) -> jax.Array:
  """Softmax attention (float32) of queries at `positions_BT` over the cache.

  A query at position p sees slots 0..p; later slots are empty, the row's
  padding, or in its future.
  """
  k_BKSH, v_BKSH = (c if layer is None else c[layer] for c in (k_cache, v_cache))
  b, t, n, h = q_BTNH.shape
  k, s = k_BKSH.shape[1], k_BKSH.shape[2]
  g = n // k
  q_BKGTH = q_BTNH.reshape(b, t, k, g, h).transpose(0, 2, 3, 1, 4)
  logits_BKGTS = jnp.einsum("BKGTH,BKSH->BKGTS", q_BKGTH, k_BKSH.astype(q_BTNH.dtype),
                            preferred_element_type=jnp.float32) * (h ** -0.5)
  allowed_B11TS = (jnp.arange(s) <= positions_BT[:, :, None])[:, None, None]
  logits_BKGTS = jnp.where(allowed_B11TS, logits_BKGTS, jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(q_BTNH.dtype)
  out_BKGTH = jnp.einsum("BKGTS,BKSH->BKGTH", probs_BKGTS, v_BKSH.astype(q_BTNH.dtype))
  return out_BKGTH.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
