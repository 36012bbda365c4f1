"""The one attention core: against a float64 reference (GQA, causal, segments, a longer
key axis), and which backend each caller reaches, cuDNN's branch included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen.models import attention_core
from jaxgen.models.attention import Attention, AttentionConfig
from jaxgen.models.attention_core import dot_product_attention, segment_mask


def reference(q_BTNH, k_BKSH, v_BKSH, allowed_BTS):
  """float64 softmax attention, GQA by repeating key/value heads."""
  q, k, v = (np.asarray(a, np.float64) for a in (q_BTNH, k_BKSH, v_BKSH))
  g = q.shape[2] // k.shape[1]
  k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
  s = np.einsum("btnh,bnsh->bnts", q, k) / np.sqrt(q.shape[-1])
  s = np.where(np.asarray(allowed_BTS)[:, None], s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bnts,bnsh->btnh", p, v)


def qkv(b=2, t=6, s=6, n=4, k=2, h=8, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(keys[0], (b, t, n, h), dtype),
          jax.random.normal(keys[1], (b, k, s, h), dtype),
          jax.random.normal(keys[2], (b, k, s, h), dtype))


@pytest.mark.parametrize("causal", [True, False])
def test_core_matches_reference_with_segments(causal):
  q, k, v = qkv()
  seg = jnp.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
  mask_B1TS = segment_mask(seg, seg)
  allowed = np.asarray(mask_B1TS[:, 0])
  if causal:
    allowed = allowed & np.tril(np.ones((6, 6), bool))
  got = dot_product_attention(q, k, v, mask_B1TS=mask_B1TS, is_causal=causal)
  np.testing.assert_allclose(got, reference(q, k, v, allowed), rtol=1e-5, atol=1e-5)


def test_causal_queries_are_the_last_of_a_longer_key_axis():
  q, k, v = qkv(t=3, s=7)
  allowed = np.broadcast_to(np.tril(np.ones((3, 7), bool), k=4), (2, 3, 7))
  got = dot_product_attention(q, k, v, is_causal=True)
  np.testing.assert_allclose(got, reference(q, k, v, allowed), rtol=1e-5, atol=1e-5)


class Spy:
  """Stands in for jax.nn.dot_product_attention: records the call and computes with
  JAX's own XLA implementation (this machine has no cuDNN)."""

  def __init__(self):
    self.calls = []
    self.jax_attention = jax.nn.dot_product_attention

  def __call__(self, q, k, v, bias=None, mask=None, **kw):
    self.calls.append(dict(kw, mask=mask, shapes=(q.shape, k.shape)))
    kw["implementation"] = "xla"
    return self.jax_attention(q, k, v, bias, mask, **kw)


@pytest.fixture
def spy(monkeypatch):
  s = Spy()
  monkeypatch.setattr(attention_core.jax.nn, "dot_product_attention", s)
  return s


def attn(backend, **overrides):
  cfg = dict(embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, dtype=jnp.bfloat16,
             backend=backend)
  return Attention(AttentionConfig(**{**cfg, **overrides}), rngs=nnx.Rngs(0))


def test_packed_batches_take_the_cudnn_branch_with_their_segment_mask(spy):
  x = jax.random.normal(jax.random.key(1), (2, 8, 32), jnp.bfloat16)
  pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
  seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0], [1] * 8])
  got = attn("cudnn")(x, pos, seg)
  (call,) = spy.calls
  assert call["implementation"] == "cudnn" and call["is_causal"]
  assert call["shapes"] == ((2, 8, 4, 8), (2, 8, 2, 8))  # [B, T, N, H], [B, S, K, H]
  np.testing.assert_array_equal(call["mask"], segment_mask(seg, seg))
  want = attn("xla")(x, pos, seg)
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             atol=3e-2)


def test_shapes_cudnn_refuses_and_the_cache_stay_on_xla(spy):
  a = attn("cudnn")
  x = jax.random.normal(jax.random.key(2), (2, 7, 32), jnp.bfloat16)
  pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
  a(x, pos, jnp.ones((2, 7), jnp.int32))  # masked, odd length: cuDNN's bias needs even
  cache = {"k": jnp.zeros((4, 8, 8), jnp.bfloat16), "v": jnp.zeros((4, 8, 8), jnp.bfloat16)}
  a.decode(x[:, :2], cache, jnp.int32(0))  # the decoding cache: XLA as before
  attn("auto")(x, pos)  # 'auto' on a CPU
  assert not spy.calls


def test_cross_attention_shares_the_core(spy):
  a = attn("cudnn")
  memory = jax.random.normal(jax.random.key(3), (2, 6, 32), jnp.bfloat16)
  x = jax.random.normal(jax.random.key(4), (2, 4, 32), jnp.bfloat16)
  mask_B1TS = segment_mask(jnp.ones((2, 4), jnp.int32), jnp.array([[1] * 5 + [0], [1] * 6]))
  k_BKSH, v_BKSH = a.cross_kv(memory)
  got = a.cross(x, k_BKSH, v_BKSH, mask_B1TS)
  (call,) = spy.calls
  assert call["implementation"] == "cudnn" and not call["is_causal"]
  want = attn("xla").cross(x, k_BKSH, v_BKSH, mask_B1TS)
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             atol=3e-2)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_packed_matches_xla():
  x = jax.random.normal(jax.random.key(6), (2, 128, 32), jnp.bfloat16)
  pos = jnp.broadcast_to(jnp.arange(128), (2, 128))
  seg = jnp.concatenate([jnp.ones((2, 50), jnp.int32), jnp.full((2, 78), 2, jnp.int32)], 1)
  got, want = (attn(b, head_dim=16)(x, pos, seg) for b in ("cudnn", "xla"))
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             atol=3e-2)
