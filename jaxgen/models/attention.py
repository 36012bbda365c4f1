"""Multi-head attention layers: projections, RoPE, the KV cache and cross-attention
around one softmax core (attention_core.py, which picks the xla|cudnn backend).

Shapes: B batch, T query length, S key length (cache size), D model width,
N query heads, K key/value heads (N % K == 0), H head size.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.models import kv_cache
from jaxgen.models.attention_core import (BACKENDS, dot_product_attention, resolve_backend,
                                          segment_mask)
from jaxgen.parallel.activations import constrain, spec_for
from jaxgen.models.params import param

__all__ = ["BACKENDS", "Attention", "AttentionConfig", "apply_rope", "resolve_backend"]
# Logical names of the query and key/value activations (see jaxgen/parallel/activations.py).
BTNH = ("batch", "length", "heads", "head_dim")
BTKH = ("batch", "length", "kv_heads", "head_dim")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  embed_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  use_rope: bool = False
  rope_base: float = 10000.0
  use_bias: bool = False
  # 'auto' picks cuDNN's fused kernel on GPU when dtype and head size allow it.
  backend: str = "auto"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  # Std of the output projection's init; GPT-2 scales it by 1/sqrt(2 * layers).
  out_init_std: float = 0.02
  # False: every position sees every other of its segment (an encoder's self-attention).
  causal: bool = True

  def __post_init__(self):
    if self.backend not in BACKENDS:
      raise ValueError(f"unknown attention backend {self.backend!r}; use one of {BACKENDS}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    if self.use_rope and self.head_dim % 2:
      raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")


class Attention(nnx.Module):
  """Causal self-attention with an optional key/value cache for decoding."""

  def __init__(self, cfg: AttentionConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nnx.initializers.normal(0.02)
    pd = cfg.param_dtype
    self.wq = param(rngs, init, (d, n, h), ("embed", "heads", "head_dim"), pd)
    self.wk = param(rngs, init, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.wv = param(rngs, init, (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.wo = param(rngs, nnx.initializers.normal(cfg.out_init_std), (n, h, d),
                    ("heads", "head_dim", "embed"), pd)
    if cfg.use_bias:
      # Biases are [heads, head_dim] but added, not multiplied: never decayed.
      bias = lambda shape, axes: param(rngs, nnx.initializers.zeros, shape, axes, pd,
                                       decay=False)
      self.bq = bias((n, h), ("heads", "head_dim"))
      self.bk = bias((k, h), ("kv_heads", "head_dim"))
      self.bv = bias((k, h), ("kv_heads", "head_dim"))
      self.bo = bias((d,), ("embed",))

  def __call__(self, x_BTD: jax.Array, positions_BT: jax.Array,
               segment_ids_BT: jax.Array | None = None) -> jax.Array:
    """Causal attention over the whole sequence (training and scoring)."""
    q_BTNH, k_BTKH, v_BTKH = self._project_qkv(x_BTD, positions_BT)
    mask_B1TS = None if segment_ids_BT is None else segment_mask(segment_ids_BT, segment_ids_BT)
    k_BKTH, v_BKTH = (x.transpose(0, 2, 1, 3) for x in (k_BTKH, v_BTKH))
    out_BTNH = dot_product_attention(q_BTNH, k_BKTH, v_BKTH, mask_B1TS=mask_B1TS,
                                     is_causal=self.cfg.causal, backend=self.cfg.backend)
    return self._project_out(out_BTNH)

  # Cross-attention: queries from x, keys/values from another sequence (an
  # encoder's output), projected once by `cross_kv` and reused by every call.

  def cross_kv(self, memory_BSD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys and values [B, K, S, H] of `memory_BSD`, heads-major as the attention
    matmuls read them, so a decoding step reuses them without a transposed copy (no
    RoPE: cross-attention has no relative positions)."""
    dt = self.cfg.dtype
    b, s, d = memory_BSD.shape
    k, h = self.cfg.num_kv_heads, self.cfg.head_dim
    w_DZ = jnp.concatenate([w[...].reshape(d, -1) for w in (self.wk, self.wv)], axis=1)
    y_MZ = memory_BSD.reshape(b * s, d).astype(dt) @ w_DZ.astype(dt)
    if self.cfg.use_bias:
      y_MZ += jnp.concatenate([bb[...].reshape(-1) for bb in (self.bk, self.bv)]).astype(dt)
    k_MKH, v_MKH = jnp.split(y_MZ, 2, axis=1)
    return tuple(x.reshape(b, s, k, h).transpose(0, 2, 1, 3) for x in (k_MKH, v_MKH))

  def cross(self, x_BTD: jax.Array, k_BKSH: jax.Array, v_BKSH: jax.Array,
            mask_B1TS: jax.Array) -> jax.Array:
    """Attends x's queries to `cross_kv`'s keys/values; `mask_B1TS` (True = may
    attend) broadcasts to [B, 1, T, S]. Softmax in float32."""
    dt = self.cfg.dtype
    b, t, d = x_BTD.shape
    n, h = self.cfg.num_heads, self.cfg.head_dim
    q_MZ = x_BTD.reshape(b * t, d).astype(dt) @ self.wq[...].reshape(d, -1).astype(dt)
    if self.cfg.use_bias:
      q_MZ += self.bq[...].reshape(-1).astype(dt)
    out_BTNH = dot_product_attention(q_MZ.reshape(b, t, n, h), k_BKSH, v_BKSH,
                                     mask_B1TS=mask_B1TS, backend=self.cfg.backend)
    return self._project_out(out_BTNH)

  def decode(self, x_BTD: jax.Array, cache: dict, index: jax.Array,
             lengths_B: jax.Array | None = None,
             layer: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Attends `T` new tokens at positions index..index+T-1 to the cache and themselves.

    `cache` holds `k` and `v`, `kv_cache` buffers [B*K, S, H] (all layers'
    [L, B*K, S, H] with this one's `layer`). `index` is one position for all
    rows (a scalar) or one per row ([B]); with `lengths_B` only each row's
    first lengths_B tokens are written. Only the new keys/values are written,
    in place.
    """
    b, t, _ = x_BTD.shape
    positions_BT = jnp.broadcast_to(jnp.expand_dims(index, -1) + jnp.arange(t), (b, t))
    q_BTNH, k_BTKH, v_BTKH = self._project_qkv(x_BTD, positions_BT)
    cache = {name: kv_cache.write(cache[name], new_BTKH, index, positions_BT, lengths_B, layer)
             for name, new_BTKH in (("k", k_BTKH), ("v", v_BTKH))}
    k_ZSH, v_ZSH = (c if layer is None else c[layer] for c in (cache["k"], cache["v"]))
    s = k_ZSH.shape[1]
    k_BKSH, v_BKSH = (c.reshape(b, -1, s, c.shape[-1]) for c in (k_ZSH, v_ZSH))
    # A query at position p sees slots 0..p; later slots are empty, the row's padding,
    # or in its future. XLA as before: the cache path was never measured with cuDNN.
    mask_B1TS = (jnp.arange(s) <= positions_BT[:, :, None])[:, None]
    out_BTNH = dot_product_attention(q_BTNH, k_BKSH, v_BKSH, mask_B1TS=mask_B1TS,
                                     backend="xla")
    return self._project_out(out_BTNH), cache

  def _project_qkv(self, x_BTD, positions_BT):
    dt = self.cfg.dtype
    b, t, d = x_BTD.shape
    x_MD = x_BTD.reshape(b * t, d).astype(dt)  # 2-D projections: see layers.tokens_2d
    x_MD = constrain(x_MD, ("batch", "embed"))
    n, k, h = self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim
    weights = (self.wq, self.wk, self.wv)
    biases = (self.bq, self.bk, self.bv) if self.cfg.use_bias else None
    if _heads_split(b, t, n, k, h):
      # With heads split over devices, q, k and v each on their own: one fused
      # [D, (N+2K)H] product would concatenate three differently split weights
      # and split its result again, an all-to-all each way (measured on
      # 2x2x2: 32 all-to-alls and 16 collective-permutes per step).
      q_MNH, k_MKH, v_MKH = (x_MD @ w[...].reshape(d, -1).astype(dt) for w in weights)
      if biases:
        q_MNH, k_MKH, v_MKH = (y + bb[...].reshape(-1).astype(dt)
                               for y, bb in zip((q_MNH, k_MKH, v_MKH), biases))
    else:
      # One matmul for q, k and v: a wider product keeps the CPU/GPU matmul
      # units busier than three narrow ones.
      w_DZ = jnp.concatenate([w[...].reshape(d, -1) for w in weights], axis=1)
      y_MZ = x_MD @ w_DZ.astype(dt)
      if biases:
        y_MZ += jnp.concatenate([bb[...].reshape(-1) for bb in biases]).astype(dt)
      q_MNH, k_MKH, v_MKH = jnp.split(y_MZ, [n * h, (n + k) * h], axis=1)
    q_BTNH = constrain(q_MNH.reshape(b, t, n, h), BTNH)
    k_BTKH = constrain(k_MKH.reshape(b, t, k, h), BTKH)
    v_BTKH = constrain(v_MKH.reshape(b, t, k, h), BTKH)
    if self.cfg.use_rope:
      q_BTNH = apply_rope(q_BTNH, positions_BT, self.cfg.rope_base)
      k_BTKH = apply_rope(k_BTKH, positions_BT, self.cfg.rope_base)
    return q_BTNH, k_BTKH, v_BTKH

  def _project_out(self, out_BTNH):
    dt = self.cfg.dtype
    b, t, n, h = out_BTNH.shape
    out_BTNH = constrain(out_BTNH, BTNH)
    y_MD = out_BTNH.reshape(b * t, n * h).astype(dt) @ self.wo[...].reshape(n * h, -1).astype(dt)
    if self.cfg.use_bias:
      y_MD += self.bo[...].astype(dt)
    return y_MD.reshape(b, t, -1)


def _heads_split(b, t, n, k, h) -> bool:
  """Whether the active activation sharding splits query or key/value heads."""
  q_spec, kv_spec = spec_for(BTNH, (b, t, n, h)), spec_for(BTKH, (b, t, k, h))
  return q_spec is not None and (q_spec[2] is not None or kv_spec[2] is not None)


def apply_rope(x_BTNH: jax.Array, positions_BT: jax.Array, base: float) -> jax.Array:
  """Rotary position embedding (rotate-half form), computed in float32."""
  h = x_BTNH.shape[-1]
  inv_freq_F = 1.0 / (base ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  angles_BTF = positions_BT.astype(jnp.float32)[..., None] * inv_freq_F
  sin_BT1F = jnp.sin(angles_BTF)[:, :, None, :]
  cos_BT1F = jnp.cos(angles_BTF)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos_BT1F - x2 * sin_BT1F, x2 * cos_BT1F + x1 * sin_BT1F], -1)
  return rotated.astype(x_BTNH.dtype)
