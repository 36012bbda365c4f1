"""Decoder-only Transformer: shapes, causality, KV-cache decoding, scan == loop, bf16, remat."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxgen.models.transformer import TransformerConfig, TransformerLM
from tests.helpers import dot_operand_dtypes, jaxpr_eqns

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


@pytest.mark.parametrize("name", ["gpt2", "llama", "scan_remat"])
@pytest.mark.slow
def test_bf16_compute_runs_every_matmul_in_bf16(name):
  overrides = {**VARIANTS[name], "dropout": 0.0}
  m16, m32 = model(dtype=jnp.bfloat16, **overrides), model(**overrides)
  graphdef16, params16 = nnx.split(m16)
  graphdef32, params32 = nnx.split(m32)
  # fp32 master weights, the same ones as the fp32 model's (same seed).
  for p16, p32 in zip(jax.tree.leaves(params16), jax.tree.leaves(params32)):
    assert p16.dtype == jnp.float32
    np.testing.assert_array_equal(p16, p32)
  x = tokens()
  forward16 = lambda p: nnx.merge(graphdef16, p)(x)
  forward32 = lambda p: nnx.merge(graphdef32, p)(x)

  # The traced program: every matmul of the bf16 model reads bf16 operands
  # (one fp32 dot_general, e.g. a model computing in fp32 and casting at the
  # end, fails), and it has as many matmuls as the fp32 model, whose are fp32.
  dots16 = dot_operand_dtypes(jax.make_jaxpr(forward16)(params16))
  dots32 = dot_operand_dtypes(jax.make_jaxpr(forward32)(params32))
  assert len(dots16) == len(dots32) >= 7  # qkv, q.k, p.v, out, 2 MLP per block; head
  assert set(dots16) == {("bfloat16", "bfloat16")}, dots16
  assert set(dots32) == {("float32", "float32")}, dots32
  # The backward pass too: no matmul reads only fp32 operands. (The
  # transposes of the fp32-accumulating q.k and head dots take their fp32
  # cotangent against a bf16 operand.)
  grad_dots = dot_operand_dtypes(
      jax.make_jaxpr(jax.grad(lambda p: forward16(p).sum()))(params16))
  assert len(grad_dots) > len(dots16)
  assert all("bfloat16" in d for d in grad_dots), grad_dots

  # The numbers: fp32 logits, off the fp32 model's by bf16 rounding (8-bit
  # mantissa, relative 2^-9 per rounding): neither ~0 nor large.
  logits16, logits32 = jax.jit(forward16)(params16), jax.jit(forward32)(params32)
  assert logits16.dtype == jnp.float32 and np.isfinite(logits16).all()
  rel = float(jnp.abs(logits16 - logits32).max() / jnp.abs(logits32).max())
  assert 3e-4 < rel < 3e-2, rel


@pytest.mark.parametrize("scan_layers", [False, True], ids=["loop", "scan"])
@pytest.mark.slow
def test_remat_computes_the_same_loss_and_gradients(scan_layers):
  # Dropout on: the recomputed forward must draw the same masks.
  overrides = dict(scan_layers=scan_layers, position="rope", dropout=0.1)
  x, rng = tokens(t=12, seed=5), jax.random.key(3)
  results = {}
  for remat in ("none", "full", "dots"):
    graphdef, params = nnx.split(model(remat=remat, **overrides))

    def loss_fn(p, graphdef=graphdef):
      logits = nnx.merge(graphdef, p)(x, dropout_rng=rng)
      return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], x[:, 1:]).mean()

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    remats = [e for e in jaxpr_eqns(jax.make_jaxpr(jax.grad(loss_fn))(params))
              if e.primitive.name in _REMAT_PRIMITIVES]
    results[remat] = loss, grads, remats

  loss, grads, remats = results["none"]
  assert not remats
  for remat in ("full", "dots"):
    got_loss, got_grads, remats = results[remat]
    np.testing.assert_allclose(got_loss, loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(grads)):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # The option is applied: one checkpointed block body per layer (one for
    # the scanned stack), with the policy the option names.
    assert len(remats) == (1 if scan_layers else BASE.num_layers), remat
    for eqn in remats:
      saved = _saved_by_policy(eqn)
      projections = [s for e, s in saved
                     if e.primitive.name == "dot_general" and not _has_batch_dims(e)]
      assert projections  # qkv, out and the MLP's two
      if remat == "full":  # nothing saved: the whole block is recomputed
        assert not any(s for _, s in saved)
      else:  # 'dots': keep the matmul outputs, recompute the elementwise work
        assert all(projections)
        assert not any(s for e, s in saved if e.primitive.name != "dot_general")


_REMAT_PRIMITIVES = ("checkpoint", "remat", "remat2")  # jax.checkpoint's name across versions


def _has_batch_dims(eqn):
  (_, _), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
  return bool(lhs_batch or rhs_batch)


def _saved_by_policy(remat_eqn):
  """(eqn, saved?) for each equation inside a checkpoint, as its policy decides it."""
  policy = remat_eqn.params["policy"]
  out = []
  for eqn in jaxpr_eqns(remat_eqn.params["jaxpr"]):
    decision = policy(eqn.primitive, *[v.aval for v in eqn.invars], **eqn.params)
    # Policies answer a bool or, in newer jax, Saveable/Recompute/Offloadable markers.
    out.append((eqn, decision is True or type(decision).__name__ in ("SaveableType",
                                                                      "Offloadable")))
  return out


@pytest.mark.parametrize("name", ["gpt2", "llama"])
@pytest.mark.slow
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
@pytest.mark.slow
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


@pytest.mark.parametrize("name", ["gpt2", "llama", "scan_remat"])
def test_prefill_of_rows_with_their_own_lengths_equals_full_forward(name):
  # Rows of different lengths share a batch: each row's first lengths_B
  # tokens of a chunk are real, the rest is padding the cache must not keep.
  m = model(**{**VARIANTS[name], "dropout": 0.0})
  x = tokens(t=12, seed=4)
  full = m(x)
  lengths = jnp.array([5, 9])
  prefill = nnx.jit(lambda m, x, n, cache: m.prefill(x, n, cache))
  first, cache = prefill(m, x[:, :6], jnp.minimum(lengths, 6), m.init_cache(2))
  second, cache = prefill(m, x[:, 6:], jnp.clip(lengths - 6, 0, 6), cache)
  assert cache["index"].tolist() == [5, 9]
  np.testing.assert_allclose(first[0], full[0, 4], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(second[1], full[1, 8], rtol=1e-4, atol=1e-4)
  # Each row continues after its own last token: per-row positions from here.
  logits, cache = nnx.jit(lambda m, x, cache: m.decode(x, cache))(
      m, jnp.stack([x[0, 5:6], x[1, 9:10]]), cache)
  assert cache["index"].tolist() == [6, 10]
  np.testing.assert_allclose(logits[:, 0], jnp.stack([full[0, 5], full[1, 9]]), rtol=1e-4,
                             atol=1e-4)


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
