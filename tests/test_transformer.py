"""Decoder-only Transformer: shapes, causality, KV-cache decoding, scan == loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen.models.transformer import TransformerConfig, TransformerLM

BASE = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=4, embed_dim=32)
VARIANTS = {
    "gpt2": {},
    "llama": dict(position="rope", norm="rmsnorm", mlp="swiglu", num_kv_heads=2,
                  tie_embeddings=False),
    "bias_dropout": dict(use_bias=True, dropout=0.1),
    "scan_remat": dict(scan_layers=True, remat="full", position="rope", num_kv_heads=1),
}


def model(**overrides):
  return TransformerLM(dataclasses.replace(BASE, **overrides), rngs=nnx.Rngs(0))


def tokens(b=2, t=12, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, 100)


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_and_dtype(name):
  m = model(**VARIANTS[name])
  logits = m(tokens())
  assert logits.shape == (2, 12, 128) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()


def test_bf16_compute_keeps_fp32_params_and_logits():
  m = model(dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert m(tokens()).dtype == jnp.float32


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_causality_through_gradients(name):
  # Untied, so each embedding row only feeds the input at the position holding that token.
  m = model(**{**VARIANTS[name], "tie_embeddings": False})
  toks = jnp.arange(10)[None]  # distinct tokens: row i of the table is position i
  graphdef, params = nnx.split(m)
  for t in [0, 4, 9]:
    grads = jax.grad(lambda p: nnx.merge(graphdef, p)(toks)[0, t].sum())(params)
    row_norms = np.abs(np.asarray(grads["embed"]["table"][...][:10])).sum(-1)
    assert np.all(row_norms[t + 1:] == 0), f"position {t} depends on later tokens"
    assert np.all(row_norms[: t + 1] > 0)


def test_dropout_only_with_a_key():
  m = model(dropout=0.5)
  x = tokens()
  np.testing.assert_array_equal(m(x), m(x))
  a, b = m(x, dropout_rng=jax.random.key(1)), m(x, dropout_rng=jax.random.key(2))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, m(x, dropout_rng=jax.random.key(1)))


@pytest.mark.parametrize("name", VARIANTS)
def test_kv_cache_decoding_equals_full_forward(name):
  m = model(**{**VARIANTS[name], "dropout": 0.0})
  x = tokens(t=12, seed=3)
  full = m(x)
  cache = m.init_cache(2)
  logits, cache = m.decode(x[:, :5], cache)
  steps = [logits]
  for i in range(5, 12):
    logits, cache = m.decode(x[:, i:i + 1], cache)
    steps.append(logits)
  assert int(cache["index"]) == 12
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_scanned_layers_compute_the_same_function_as_a_loop():
  loop = model(position="rope")
  scan = model(position="rope", scan_layers=True)
  loop_params = nnx.state(loop, nnx.Param)
  # Stack the loop model's per-layer parameters onto the scan model's layer axis.
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[loop_params["blocks"][i]
                                                      for i in range(BASE.num_layers)])
  scan_params = nnx.state(scan, nnx.Param)
  for path, v in nnx.to_flat_state(scan_params["blocks"]):
    target = stacked
    for k in path:
      target = target[k]
    v.set_value(target[...])
  for k in ("embed", "final_norm"):
    nnx.update(getattr(scan, k), loop_params[k])
  x = tokens()
  np.testing.assert_allclose(scan(x), loop(x), rtol=1e-5, atol=1e-5)
