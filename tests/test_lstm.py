"""Tests for jaxgen.models.lstm against a step-by-step reference LSTM."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxgen.models import params as params_lib
from jaxgen.models.lstm import LSTMConfig, LSTMLM
from tests.helpers import dot_operand_dtypes

B, T = 2, 10

# Jitted calls compile the whole model once; eager calls would compile every
# primitive separately, which dominates this file's run time.
_apply = jax.jit(lambda model, tokens, rng=None: model(tokens, dropout_rng=rng))


def _config(**overrides) -> LSTMConfig:
  # unroll=3 does not divide T=10, so the scan's remainder path runs too.
  kwargs = dict(vocab_size=16, embed_dim=8, hidden_size=12, num_layers=2,
                unroll=3)
  kwargs.update(overrides)
  return LSTMConfig(**kwargs)


def _tokens(vocab_size: int, seed: int = 0) -> jax.Array:
  return jax.random.randint(jax.random.PRNGKey(seed), (B, T), 0, vocab_size)


def _reference_forward(model: LSTMLM, tokens_BT: jax.Array,
                       dtype=jnp.float32) -> jax.Array:
  """Plain per-timestep LSTM (gate order i, f, g, o) on the model's arrays.

  Every matmul reads its operands rounded to `dtype` and accumulates in
  float32; everything else (gates, cell, bias) is float32.
  """
  def matmul(a, b):
    return jnp.dot(a.astype(dtype), b.astype(dtype),
                   preferred_element_type=jnp.float32)

  x_BTD = model.embedding[...][tokens_BT]
  hidden = model.cfg.hidden_size
  state = [(jnp.zeros((B, hidden)), jnp.zeros((B, hidden)))
           for _ in model.layers]
  logits = []
  for t in range(tokens_BT.shape[1]):
    inp_BD = x_BTD[:, t]
    for index, layer in enumerate(model.layers):
      h_BH, c_BH = state[index]
      z_BG = (matmul(inp_BD, layer.w_ih[...]) + layer.bias[...]
              + matmul(h_BH, layer.w_hh[...]))
      i, f, g, o = jnp.split(z_BG, 4, axis=-1)
      c_BH = jax.nn.sigmoid(f) * c_BH + jax.nn.sigmoid(i) * jnp.tanh(g)
      h_BH = jax.nn.sigmoid(o) * jnp.tanh(c_BH)
      state[index] = (h_BH, c_BH)
      inp_BD = h_BH
    logits.append(matmul(inp_BD, model.head_w[...]) + model.head_b[...])
  return jnp.stack(logits, axis=1)


def _loss(logits_BTV: jax.Array, tokens_BT: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(
      logits_BTV[:, :-1], tokens_BT[:, 1:]).mean()


def test_shapes_dtype_and_logical_axes():
  cfg = _config()
  model = LSTMLM(cfg, rngs=nnx.Rngs(0))
  logits = _apply(model, _tokens(cfg.vocab_size))
  assert logits.shape == (B, T, cfg.vocab_size)
  assert logits.dtype == jnp.float32
  carry = model.initial_carry(B)
  assert len(carry) == cfg.num_layers
  assert all(a.shape == (B, cfg.hidden_size) for pair in carry for a in pair)
  # Built abstractly, as the training code does, every parameter is tagged.
  abstract = nnx.eval_shape(lambda: LSTMLM(cfg, rngs=nnx.Rngs(0)))
  axes = {
      path: (params_lib.logical_axes(variable), variable.shape)
      for path, variable in nnx.iter_graph(abstract)
      if isinstance(variable, nnx.Param)
  }
  assert axes == {
      ("embedding",): (("vocab", "embed"), (16, 8)),
      ("layers", 0, "w_ih"): (("embed", "mlp"), (8, 48)),
      ("layers", 0, "w_hh"): (("embed", "mlp"), (12, 48)),
      ("layers", 0, "bias"): (("mlp",), (48,)),
      ("layers", 1, "w_ih"): (("embed", "mlp"), (12, 48)),
      ("layers", 1, "w_hh"): (("embed", "mlp"), (12, 48)),
      ("layers", 1, "bias"): (("mlp",), (48,)),
      ("head_w",): (("embed", "vocab"), (12, 16)),
      ("head_b",): (("vocab",), (16,)),
  }


# vocab 16 <= B*T takes the projected-vocabulary gather path, 64 does not.
@pytest.mark.parametrize("vocab_size", [16, 64])
def test_matches_step_by_step_reference(vocab_size):
  model = LSTMLM(_config(vocab_size=vocab_size), rngs=nnx.Rngs(1))
  tokens = _tokens(vocab_size)
  np.testing.assert_allclose(
      _apply(model, tokens),
      _reference_forward(model, tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_gradients_match_autodiff_of_reference():
  # The recurrence has a hand-written VJP; the reference is plain autodiff.
  model = LSTMLM(_config(), rngs=nnx.Rngs(2))
  tokens = _tokens(16)[:, :7]  # Short: the unrolled reference compiles slowly.
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_of(forward):
    return lambda p: _loss(forward(nnx.merge(graphdef, p), tokens),
                           tokens)

  grads = jax.jit(jax.grad(loss_of(lambda m, x: m(x))))(params)
  expected = jax.jit(jax.grad(loss_of(_reference_forward)))(params)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    assert float(jnp.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)


def test_carry_continuation_equals_full_forward():
  cfg = _config()
  model = LSTMLM(cfg, rngs=nnx.Rngs(3))
  tokens = _tokens(cfg.vocab_size)
  k = 4
  forward = nnx.jit(lambda m, x, carry: m.forward_with_carry(x, carry))
  full_logits, full_carry = forward(model, tokens, model.initial_carry(B))
  head_logits, carry = forward(model, tokens[:, :k], model.initial_carry(B))
  tail_logits, carry = forward(model, tokens[:, k:], carry)
  np.testing.assert_allclose(
      jnp.concatenate([head_logits, tail_logits], axis=1), full_logits,
      atol=1e-5, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(full_carry)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # The sampler's interface: prefill, then one token at a time.
  decode = nnx.jit(lambda m, x, cache: m.decode(x, cache))
  logits, cache = decode(model, tokens[:, :k], model.init_cache(B, T))
  steps = [logits]
  for t in range(k, T):
    logits, cache = decode(model, tokens[:, t:t + 1], cache)
    steps.append(logits)
  np.testing.assert_allclose(
      jnp.concatenate(steps, axis=1), full_logits, atol=1e-5, rtol=1e-5)


def test_prefill_stops_each_row_at_its_length():
  # Padding after a row's last real token must leave its carry alone.
  cfg = _config()
  model = LSTMLM(cfg, rngs=nnx.Rngs(3))
  tokens = _tokens(cfg.vocab_size, seed=5)
  lengths = jnp.array([4, T])
  prefill = nnx.jit(lambda m, x, n, cache: m.prefill(x, n, cache))
  logits, carry = prefill(model, tokens, lengths, model.init_cache(B))
  forward = nnx.jit(lambda m, x, carry: m.forward_with_carry(x, carry))
  for b, n in enumerate(lengths.tolist()):
    want_logits, want_carry = forward(model, tokens[b:b + 1, :n], model.initial_carry(1))
    np.testing.assert_allclose(logits[b], want_logits[0, -1], atol=1e-5, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry)):
      np.testing.assert_allclose(got[b], want[0], atol=1e-5, rtol=1e-5)


def test_causal_through_gradients():
  cfg = _config()
  model = LSTMLM(cfg, rngs=nnx.Rngs(4))
  x_BTD = model.embedding[...][_tokens(cfg.vocab_size)]
  carry = model.initial_carry(B)

  @jax.jit
  def grad_at(x_BTD, t):
    def output_at_t(x_BTD):
      logits_BTV, _ = model._forward_embedded(x_BTD, carry)
      return logits_BTV[:, t].sum()
    return jax.grad(output_at_t)(x_BTD)

  for t in (0, 4, T - 1):
    influence_T = jnp.abs(grad_at(x_BTD, t)).sum(axis=(0, 2))
    assert jnp.all(influence_T[t + 1:] == 0), (t, influence_T)
    assert jnp.all(influence_T[:t + 1] > 0), (t, influence_T)


def test_dropout_only_with_a_key():
  model = LSTMLM(_config(dropout=0.5), rngs=nnx.Rngs(5))
  plain = LSTMLM(_config(), rngs=nnx.Rngs(5))  # Same parameters.
  tokens = _tokens(16)
  key_a, key_b = jax.random.split(jax.random.PRNGKey(6))
  np.testing.assert_allclose(
      _apply(model, tokens), _apply(plain, tokens), atol=1e-6)
  np.testing.assert_allclose(
      _apply(plain, tokens, key_a), _apply(plain, tokens), atol=1e-6)
  first = _apply(model, tokens, key_a)
  np.testing.assert_allclose(_apply(model, tokens, key_a), first)
  assert not np.allclose(first, _apply(model, tokens, key_b))
  assert not np.allclose(first, _apply(plain, tokens))


# Both input-projection paths (vocabulary gather and per-token matmul).
@pytest.mark.parametrize("vocab_size", [16, 64])
@pytest.mark.slow
def test_bfloat16_compute_runs_the_matmuls_in_bfloat16(vocab_size):
  cfg = _config(vocab_size=vocab_size, dtype=jnp.bfloat16)
  model = LSTMLM(cfg, rngs=nnx.Rngs(7))
  tokens = _tokens(cfg.vocab_size)
  graphdef, params = nnx.split(model, nnx.Param)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  forward = lambda p: nnx.merge(graphdef, p)(tokens)

  # The traced program: every forward matmul (input projection, h @ W_hh,
  # head) reads bf16 operands, and no backward matmul reads only fp32 ones.
  dots = dot_operand_dtypes(jax.make_jaxpr(forward)(params))
  assert len(dots) >= 5 and set(dots) == {("bfloat16", "bfloat16")}, dots
  loss_fn = lambda p: _loss(forward(p), tokens)
  grad_dots = dot_operand_dtypes(jax.make_jaxpr(jax.grad(loss_fn))(params))
  assert all("bfloat16" in d for d in grad_dots), grad_dots

  # The numbers: the reference rounding matmul operands to bf16 matches to
  # float32 accuracy; the fp32 reference is off by bf16 rounding, far more.
  # A model computing in fp32 (and casting at the end) fails the first.
  logits = _apply(model, tokens)
  assert logits.dtype == jnp.float32
  reference = jax.jit(_reference_forward, static_argnums=2)
  error_bf16 = float(jnp.abs(logits - reference(model, tokens, jnp.bfloat16)).max())
  error_fp32 = float(jnp.abs(logits - reference(model, tokens, jnp.float32)).max())
  assert error_bf16 < 1e-4 and error_fp32 > 10 * max(error_bf16, 3e-5), (
      error_bf16, error_fp32)

  # Jitted: XLA's CPU runtime cannot run some bf16 x bf16 -> f32 dots eagerly.
  grads = jax.jit(jax.grad(loss_fn))(params)
  for leaf in jax.tree.leaves(grads):
    assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf)))
    assert float(jnp.abs(leaf).max()) > 0


@pytest.mark.slow
def test_adam_steps_reduce_loss_on_repeating_sequence():
  cfg = _config(dropout=0.1)
  model = LSTMLM(cfg, rngs=nnx.Rngs(8))
  tokens = jnp.tile(jnp.arange(5), (B, 4))[:, :16]
  # The model holds only parameters, as the train step relies on.
  graphdef, params = nnx.split(model, nnx.Param)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-1))
  opt_state = tx.init(params)
  rng = jax.random.PRNGKey(9)

  @jax.jit
  def train_step(params, opt_state, step):
    def loss_fn(params):
      model = nnx.merge(graphdef, params)
      return _loss(model(tokens, dropout_rng=jax.random.fold_in(rng, step)),
                   tokens)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for step in range(15):
    params, opt_state, loss = train_step(params, opt_state, step)
    losses.append(float(loss))
  assert losses[-1] < 0.3 * losses[0], losses
