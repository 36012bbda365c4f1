"""The one grouped-query softmax attention: training, packed segments, the decoding
cache and cross-attention all call `dot_product_attention`, which picks XLA or cuDNN.

Shapes: B batch, T query length, S key length, N query heads, K key/value heads
(N % K == 0), G = N / K query heads per key/value head, H head size, Z = B*K.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BACKENDS = ("auto", "xla", "cudnn")


def dot_product_attention(q_BTNH: jax.Array, k_BKSH: jax.Array, v_BKSH: jax.Array, *,
                          mask_B1TS: jax.Array | None = None, is_causal: bool = False,
                          backend: str = "xla") -> jax.Array:
  """Softmax attention (float32 softmax) of queries over heads-major keys/values.

  `mask_B1TS` (True = may attend) broadcasts to [B, 1, T, S]: one mask for all heads,
  e.g. `segment_mask` of packed rows. With `is_causal`, query i sits at key position
  S - T + i (the last T of S positions). Keys and values are cast to the query dtype.
  """
  t, s = q_BTNH.shape[1], k_BKSH.shape[2]
  if _use_cudnn(backend, q_BTNH, t, s, mask_B1TS):
    # cuDNN wants [B, S, K, H]; XLA cancels this transpose against the caller's.
    k_BSKH, v_BSKH = (x.astype(q_BTNH.dtype).transpose(0, 2, 1, 3) for x in (k_BKSH, v_BKSH))
    # A boolean mask reaches cuDNN's fused kernel as an additive bias (JAX turns it into
    # one): packed segments keep the fused kernel rather than falling back to XLA.
    mask = None if mask_B1TS is None else jnp.broadcast_to(mask_B1TS, (q_BTNH.shape[0], 1, t, s))
    return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, mask=mask, is_causal=is_causal,
                                        implementation="cudnn")
  return _xla_attention(q_BTNH, k_BKSH, v_BKSH, mask_B1TS, is_causal)


def segment_mask(q_segment_ids_BT: jax.Array, kv_segment_ids_BS: jax.Array) -> jax.Array:
  """[B, 1, T, S]: a query sees only the keys of its own segment (example)."""
  return q_segment_ids_BT[:, None, :, None] == kv_segment_ids_BS[:, None, None, :]


def resolve_backend(backend: str, dtype: jnp.dtype, head_dim: int) -> str:
  """Maps 'auto' to 'cudnn' where cuDNN's fused attention applies, else 'xla'."""
  if backend != "auto":
    return backend
  on_gpu = jax.default_backend() == "gpu"
  # cuDNN's flash attention takes half precision and head sizes up to 128 in steps of 8.
  fits = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128
  return "cudnn" if on_gpu and fits else "xla"


def _use_cudnn(backend, q_BTNH, t, s, mask_B1TS) -> bool:
  if resolve_backend(backend, q_BTNH.dtype, q_BTNH.shape[-1]) != "cudnn":
    return False
  # cuDNN refuses a bias (our mask) with odd lengths when it also computes gradients;
  # a one-token decoding step (T=1) is such a shape and gains nothing from fusion.
  return mask_B1TS is None or (t % 2 == 0 and s % 2 == 0)


def _xla_attention(q_BTNH, k_BKSH, v_BKSH, mask_B1TS, is_causal):
  """Written out rather than via `jax.nn.dot_product_attention(implementation='xla')`:
  grouping query heads by their key/value head (rows Z = B*K, each a block of G*T
  query rows) avoids repeating K and V, and heads-major layouts need no transposed
  copies in the backward pass (measured 1.8x faster gradient on CPU) nor of a
  decoding cache ([Z, S, H] buffers, see kv_cache.py)."""
  b, t, n, h = q_BTNH.shape
  k, s = k_BKSH.shape[1], k_BKSH.shape[2]
  g, dt = n // k, q_BTNH.dtype
  q_ZQH = q_BTNH.reshape(b, t, k, g, h).transpose(0, 2, 3, 1, 4).reshape(b * k, g * t, h)
  k_ZSH, v_ZSH = (x.reshape(b * k, s, h).astype(dt) for x in (k_BKSH, v_BKSH))
  logits_ZQS = jnp.einsum("ZQH,ZSH->ZQS", q_ZQH, k_ZSH,
                          preferred_element_type=jnp.float32) * (h ** -0.5)
  allowed_B1GTS = jnp.ones((1, 1, 1, t, s), bool)
  if is_causal:
    allowed_B1GTS = jnp.tril(jnp.ones((t, s), bool), k=s - t)[None, None, None]
  if mask_B1TS is not None:
    allowed_B1GTS = allowed_B1GTS & mask_B1TS[:, :, None]
  logits_BKGTS = jnp.where(allowed_B1GTS, logits_ZQS.reshape(b, k, g, t, s),
                           jnp.finfo(jnp.float32).min)
  probs_ZQS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(dt).reshape(b * k, g * t, s)
  out_ZQH = jnp.einsum("ZQS,ZSH->ZQH", probs_ZQS, v_ZSH)
  return out_ZQH.reshape(b, k, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
