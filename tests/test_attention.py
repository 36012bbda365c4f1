"""Attention against a plain float64 reference: causal, RoPE, GQA, KV cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen.models import kv_cache
from jaxgen.models.attention import Attention, AttentionConfig, apply_rope, resolve_backend


def reference_attention(x, wq, wk, wv, wo, positions, rope_base=None):
  """Softmax attention in float64 numpy; RoPE as complex rotation; GQA by repeating heads."""
  x, wq, wk, wv, wo = (np.asarray(a, np.float64) for a in (x, wq, wk, wv, wo))
  q = np.einsum("btd,dnh->btnh", x, wq)
  k = np.einsum("btd,dkh->btkh", x, wk)
  v = np.einsum("btd,dkh->btkh", x, wv)
  if rope_base is not None:
    q, k = reference_rope(q, positions, rope_base), reference_rope(k, positions, rope_base)
  group = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
  t = x.shape[1]
  s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bnts,bsnh,nhd->btd", p, v, wo)


def reference_rope(x, positions, base):
  h = x.shape[-1]
  freq = base ** (-np.arange(0, h, 2) / h)
  z = x[..., : h // 2] + 1j * x[..., h // 2:]
  z = z * np.exp(1j * np.asarray(positions, np.float64)[:, :, None, None] * freq)
  return np.concatenate([z.real, z.imag], -1)


def make(num_heads=4, num_kv_heads=4, use_rope=False, head_dim=8, embed_dim=32):
  cfg = AttentionConfig(embed_dim=embed_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
                        head_dim=head_dim, use_rope=use_rope, backend="xla")
  return Attention(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("use_rope", [False, True])
@pytest.mark.slow
def test_matches_reference(num_kv_heads, use_rope):
  attn = make(num_kv_heads=num_kv_heads, use_rope=use_rope)
  x = jax.random.normal(jax.random.key(1), (2, 10, 32))
  pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
  got = attn(x, pos)
  want = reference_attention(x, attn.wq[...], attn.wk[...], attn.wv[...], attn.wo[...], pos,
                             10000.0 if use_rope else None)
  assert got.shape == (2, 10, 32)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
  q = jax.random.normal(jax.random.key(2), (1, 6, 2, 8))
  k = jax.random.normal(jax.random.key(3), (1, 6, 2, 8))
  pos = jnp.arange(6)[None]
  scores = lambda p: jnp.einsum("btnh,bsnh->bnts", apply_rope(q, p, 1e4), apply_rope(k, p, 1e4))
  np.testing.assert_allclose(scores(pos), scores(pos + 17), rtol=1e-4, atol=1e-4)
  assert not np.allclose(apply_rope(q, pos, 1e4), apply_rope(q, pos + 17, 1e4))


@pytest.mark.slow
def test_causal_gradient():
  attn = make(num_kv_heads=2, use_rope=True)
  x = jax.random.normal(jax.random.key(4), (1, 8, 32))
  pos = jnp.arange(8)[None]
  for t in range(8):
    g = jax.grad(lambda x: attn(x, pos)[0, t].sum())(x)
    assert np.all(g[0, t + 1:] == 0), f"position {t} sees the future"
    assert np.all(np.abs(g[0, : t + 1]).sum(-1) > 0)


@pytest.mark.slow
def test_kv_cache_steps_equal_full_forward():
  attn = make(num_heads=4, num_kv_heads=2, use_rope=True)
  x = jax.random.normal(jax.random.key(5), (2, 9, 32))
  full = attn(x, jnp.broadcast_to(jnp.arange(9), (2, 9)))
  cache = {"k": kv_cache.empty(2, 2, 12, 8, jnp.float32),
           "v": kv_cache.empty(2, 2, 12, 8, jnp.float32)}
  out, cache = attn.decode(x[:, :4], cache, jnp.int32(0))  # prefill
  outs = [out]
  for i in range(4, 9):
    out, cache = attn.decode(x[:, i:i + 1], cache, jnp.int32(i))
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_backend_choice_and_validation():
  assert resolve_backend("auto", jnp.bfloat16, 64) == ("cudnn" if jax.default_backend() == "gpu"
                                                       else "xla")
  assert resolve_backend("auto", jnp.float32, 64) == "xla"
  assert resolve_backend("auto", jnp.bfloat16, 256) == "xla"
  with pytest.raises(ValueError, match="unknown attention backend"):
    AttentionConfig(embed_dim=8, num_heads=2, num_kv_heads=2, head_dim=4, backend="flash9")
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    AttentionConfig(embed_dim=8, num_heads=3, num_kv_heads=2, head_dim=4)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_matches_xla():
  cfg = dict(embed_dim=64, num_heads=4, num_kv_heads=2, head_dim=16, dtype=jnp.bfloat16)
  xla = Attention(AttentionConfig(**cfg, backend="xla"), rngs=nnx.Rngs(0))
  cudnn = Attention(AttentionConfig(**cfg, backend="cudnn"), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(6), (2, 128, 64))
  pos = jnp.broadcast_to(jnp.arange(128), (2, 128))
  np.testing.assert_allclose(cudnn(x, pos).astype(jnp.float32), xla(x, pos).astype(jnp.float32),
                             atol=3e-2)
