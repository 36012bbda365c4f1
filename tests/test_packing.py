"""Packed rows: attention and positions never cross documents; the loss counts real targets."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxgen.models.transformer import TransformerConfig, TransformerLM
from jaxgen.train.step import make_eval_step, make_train_step

BASE = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=4, embed_dim=32)
# Two documents and padding in one row of 12.
SEGMENTS = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0]], np.int32)
POSITIONS = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 0]], np.int32)


def tokens(seed=0):
  return jax.random.randint(jax.random.key(seed), SEGMENTS.shape, 0, 100)


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.slow
def test_no_gradient_crosses_a_document_boundary(position):
  model = TransformerLM(dataclasses.replace(BASE, position=position), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tokens_BT = tokens()

  def second_document_logits(delta_BTD):
    m = nnx.merge(graphdef, params)
    embed = m._embed
    # A perturbation added to every input embedding: the gradient with
    # respect to it shows which inputs each output depends on.
    object.__setattr__(m, "_embed", lambda t, p: embed(t, p) + delta_BTD)
    logits = m(tokens_BT, positions_BT=POSITIONS, segment_ids_BT=SEGMENTS)
    return logits[0, 5:10].sum()

  grad_BTD = jax.grad(second_document_logits)(jnp.zeros((1, 12, BASE.embed_dim)))
  influence_T = np.abs(np.asarray(grad_BTD[0])).sum(-1)
  assert np.all(influence_T[:5] == 0), "the second document sees the first"
  assert np.all(influence_T[10:] == 0), "the second document sees padding"
  assert np.all(influence_T[5:10] > 0)


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.slow
def test_a_packed_document_computes_what_it_computes_alone(position):
  model = TransformerLM(dataclasses.replace(BASE, position=position), rngs=nnx.Rngs(0))
  tokens_BT = tokens(1)
  packed = model(tokens_BT, positions_BT=POSITIONS, segment_ids_BT=SEGMENTS)
  first, second = model(tokens_BT[:, :5]), model(tokens_BT[:, 5:10])
  np.testing.assert_allclose(packed[:, :5], first, atol=1e-5, rtol=0)
  np.testing.assert_allclose(packed[:, 5:10], second, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_packed_and_unpacked_losses_agree_on_single_document_rows():
  model = TransformerLM(BASE, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(0)
  rows = rng.integers(0, 100, (4, 13)).astype(np.int32)
  plain = {"inputs": rows[:, :-1], "targets": rows[:, 1:]}
  packed = {**plain, "segment_ids": np.ones((4, 12), np.int32),
            "positions": np.broadcast_to(np.arange(12, dtype=np.int32), (4, 12)),
            "weights": np.ones((4, 12), np.float32)}
  opt = optax.sgd(0.1)
  step = jax.jit(make_train_step(graphdef, opt, optax.constant_schedule(0.1)))
  from jaxgen.train.state import TrainState
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
                     rng=jax.random.key_data(jax.random.key(0)))
  (s1, m1), (s2, m2) = step(state, plain), step(state, packed)
  np.testing.assert_allclose(m1["train_loss"], m2["train_loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_padding_does_not_count_in_the_loss():
  model = TransformerLM(BASE, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  eval_step = jax.jit(make_eval_step(graphdef))
  inputs = np.asarray(tokens(2))
  targets = np.roll(inputs, -1, axis=1)
  weights = (SEGMENTS != 0).astype(np.float32)
  batch = {"inputs": inputs, "targets": targets, "segment_ids": SEGMENTS,
           "positions": POSITIONS, "weights": weights}
  total, count = eval_step(params, batch)
  # Recomputed by hand from the logits: mean over the 10 real targets only.
  logits = model(inputs, positions_BT=POSITIONS, segment_ids_BT=SEGMENTS)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  assert float(count) == 10
  np.testing.assert_allclose(total, (ce * weights).sum(), rtol=1e-5)
  garbage = dict(batch, targets=np.where(weights > 0, targets, 7))
  np.testing.assert_allclose(eval_step(params, garbage)[0], total, rtol=1e-6)
