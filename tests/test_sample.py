"""Sampling: cached decoding equals full recomputation; seeds and filters behave."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen.models.interface import DecoderOnly
from jaxgen.models.lstm import LSTMConfig, LSTMLM
from jaxgen.models.transformer import TransformerConfig, TransformerLM
from jaxgen.sample.decode import generate, sample_logits


def greedy_by_recompute(model, prompt, num_tokens, window=None, per_segment=None):
  """Greedy decoding by full forward passes, segment by segment like `generate`.

  Each context is right-padded to one length so the forward pass compiles
  once; causality makes the padding invisible to the last real position.
  """
  graphdef, params = nnx.split(model)
  width = len(prompt) + num_tokens if window is None else window + per_segment
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
  seq = list(prompt)
  while len(seq) - len(prompt) < num_tokens:
    context = seq[-window:] if window else list(seq)
    for _ in range(per_segment or num_tokens):
      padded = jnp.asarray([context + [0] * (width - len(context))])
      logits = forward(params, padded)[0, len(context) - 1, :65]
      context.append(int(jnp.argmax(logits)))
      seq.append(context[-1])
  return seq[len(prompt):len(prompt) + num_tokens]


def test_transformer_greedy_matches_recompute_across_windows():
  cfg = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=2, embed_dim=32,
                          position="rope")
  model = TransformerLM(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  prompt = [3, 9, 4]
  got = generate(graphdef, params, np.array([prompt]), 30, temperature=0.0, vocab_size=65,
                 max_len=16)
  assert got.shape == (1, 30)
  assert list(got[0]) == greedy_by_recompute(model, prompt, 30, window=8, per_segment=8)


def test_lstm_greedy_matches_recompute():
  cfg = LSTMConfig(vocab_size=128, embed_dim=16, hidden_size=16, num_layers=2)
  model = LSTMLM(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  got = generate(graphdef, params, np.array([[1, 2, 3]]), 20, temperature=0.0, vocab_size=65)
  assert list(got[0]) == greedy_by_recompute(model, [1, 2, 3], 20)


def test_long_prompt_prefilled_in_chunks_matches_recompute():
  # 21 prompt tokens take two prefill chunks; a context of 40 is no whole
  # number of chunks, and without max_len nothing is cropped.
  cfg = TransformerConfig(vocab_size=128, max_len=40, num_layers=2, num_heads=2, embed_dim=32)
  model = TransformerLM(cfg, rngs=nnx.Rngs(2))
  graphdef, params = nnx.split(model)
  prompt = list(np.random.default_rng(0).integers(0, 65, 21))
  got = generate(graphdef, params, np.array([prompt]), 19, temperature=0.0, vocab_size=65)
  assert list(got[0]) == greedy_by_recompute(model, prompt, 19)


def _count_compiles():
  """A list that grows by one entry per program lowered for XLA until `stop()` (counted
  at lowering, so a persistent compilation cache's hit counts too)."""
  compiles = []

  def listener(event, duration, **kwargs):
    if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  return compiles, lambda: jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_prompts_of_any_lengths_batched_equal_one_at_a_time_with_one_program(kind):
  if kind == "transformer":
    cfg = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=2, embed_dim=32,
                            position="rope")
    graphdef, params = nnx.split(TransformerLM(cfg, rngs=nnx.Rngs(0)))
    max_len = 16  # windows of 8: the 12-token prompt is cropped, 20 tokens take 3 segments
  else:
    cfg = LSTMConfig(vocab_size=128, embed_dim=16, hidden_size=16, num_layers=2)
    graphdef, params = nnx.split(LSTMLM(cfg, rngs=nnx.Rngs(0)))
    max_len = None
  rng = np.random.default_rng(1)
  prompts = [list(rng.integers(0, 65, n)) for n in (3, 1, 12, 7)]
  for kwargs in (dict(temperature=0.0), dict(temperature=1.0, top_k=20, seed=3)):
    run = lambda rows, **more: generate(graphdef, params, rows, 20, vocab_size=65,
                                        max_len=max_len, **kwargs, **more)
    batched = run(prompts)
    alone = [run([p], row_ids=[i])[0] for i, p in enumerate(prompts)]
    np.testing.assert_array_equal(batched, np.stack(alone))
  # Once compiled for a batch size, other prompt lengths and token counts
  # reuse the program.
  compiles, stop = _count_compiles()
  try:
    run([[5] * 2, [6] * 9, [7], [8] * 4])
    generate(graphdef, params, [[5] * 5] * 4, 7, vocab_size=65, max_len=max_len, **kwargs)
  finally:
    stop()
  assert compiles == []


def test_same_seed_same_samples_and_padding_never_drawn():
  cfg = TransformerConfig(vocab_size=128, max_len=16, num_layers=1, num_heads=2, embed_dim=16)
  graphdef, params = nnx.split(TransformerLM(cfg, rngs=nnx.Rngs(0)))
  run = lambda seed: generate(graphdef, params, np.zeros((4, 1), np.int32), 40, seed=seed,
                              temperature=1.5, vocab_size=65, max_len=16)
  a, b, c = run(0), run(0), run(1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.max() < 65 and c.max() < 65


def test_top_k_draws_only_from_the_k_best():
  logits = jnp.log(jnp.array([[0.05, 0.4, 0.05, 0.3, 0.2]]))
  keys = jax.random.split(jax.random.key(0), 500)
  draws = jax.vmap(lambda k: sample_logits(logits, k, 1.0, top_k=2))(keys)
  assert set(np.unique(draws).tolist()) == {1, 3}


def test_top_p_draws_only_from_the_nucleus():
  # Probabilities 0.4, 0.3, 0.2, 0.05, 0.05: p=0.75 needs the top three (0.4+0.3 < 0.75).
  logits = jnp.log(jnp.array([[0.05, 0.4, 0.2, 0.3, 0.05]]))
  keys = jax.random.split(jax.random.key(1), 800)
  draws = jax.vmap(lambda k: sample_logits(logits, k, 1.0, top_p=0.75))(keys)
  assert set(np.unique(draws).tolist()) == {1, 2, 3}
  only_top = jax.vmap(lambda k: sample_logits(logits, k, 1.0, top_p=0.3))(keys)
  assert set(np.unique(only_top).tolist()) == {1}


class RiggedLM(DecoderOnly, nnx.Module):
  """A "model" whose logits are `logits_V` at every position, whatever it reads:
  its favourite tokens are chosen by the test. It has the decoding interface
  (`init_decoding` from `init_cache`, `prefill`, `decode`) that `generate` uses."""

  def __init__(self, logits_V):
    self.logits_V = nnx.Param(jnp.asarray(logits_V, jnp.float32))

  def init_cache(self, batch_size, max_len=None):
    del batch_size, max_len
    return {"index": jnp.zeros((), jnp.int32)}

  def decode(self, tokens_BT, cache):
    b, t = tokens_BT.shape
    logits_V = self.logits_V[...]
    return (jnp.broadcast_to(logits_V, (b, t, logits_V.shape[0])),
            {"index": cache["index"] + t})

  @property
  def context_len(self):
    return None  # reads any length, like an LSTM

  def prefill(self, tokens_BT, lengths_B, cache):
    del lengths_B
    logits_BTV, cache = self.decode(tokens_BT, cache)
    return logits_BTV[:, -1], cache


# Ids 2 and 3 play pad and bos, 5 and 6 the vocabulary's padding past a
# tokenizer of 5 ids: the four most likely tokens are the four never allowed.
_RIGGED = jnp.array([0.0, 1.0, 8.0, 9.0, 0.5, 10.0, 10.0])
_ALLOWED = {0, 1, 4}


def test_excluded_and_padded_ids_are_never_drawn_though_most_likely():
  keys = jax.random.split(jax.random.key(2), 2000)
  masked = dict(vocab_size=5, exclude_ids=(2, 3))
  draws = jax.vmap(lambda k: sample_logits(_RIGGED[None], k, 1.0, **masked))(keys)
  assert set(np.unique(draws).tolist()) == _ALLOWED
  assert int(sample_logits(_RIGGED[None], keys[0], 0.0, **masked)[0]) == 1
  # Unmasked, the same draws are nearly all of the four forbidden ids.
  free = np.asarray(jax.vmap(lambda k: sample_logits(_RIGGED[None], k, 1.0))(keys))
  assert np.isin(free, [2, 3, 5, 6]).mean() > 0.9
  assert int(sample_logits(_RIGGED[None], keys[0], 0.0)[0]) in (5, 6)

  graphdef, params = nnx.split(RiggedLM(_RIGGED))
  prompt = np.zeros((4, 2), np.int32)
  for temperature in (0.0, 1.0):
    got = generate(graphdef, params, prompt, 40, temperature=temperature, max_len=16, **masked)
    assert got.shape == (4, 40) and set(np.unique(got).tolist()) <= _ALLOWED
  assert (generate(graphdef, params, prompt, 40, temperature=0.0, **masked) == 1).all()
  free = generate(graphdef, params, prompt, 40, temperature=1.0, max_len=16)
  assert np.isin(free, [2, 3, 5, 6]).mean() > 0.9


_LOGITS = np.array([2.0, 1.0, 0.0, -0.5, -1.5])


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_samples_softmax_of_logits_over_temperature(temperature):
  n = 40_000
  draws = sample_logits(jnp.broadcast_to(jnp.asarray(_LOGITS), (n, 5)), jax.random.key(3),
                        temperature)
  counts = np.bincount(np.asarray(draws), minlength=5)
  assert counts.sum() == n

  def chi2(probs):
    expected = n * probs
    return float(((counts - expected) ** 2 / expected).sum())

  # 4 degrees of freedom: a correct sampler exceeds 20 with probability 5e-4
  # (the seed is fixed, so the outcome is too).
  assert chi2(_softmax(_LOGITS / temperature)) < 20
  # The test can tell temperatures apart: the neighbouring ones are far off.
  for other in {0.5, 1.0, 2.0} - {temperature}:
    assert chi2(_softmax(_LOGITS / other)) > 200, other


def test_temperature_zero_is_argmax():
  logits = jax.random.normal(jax.random.key(4), (64, 50))
  for seed in range(3):
    got = sample_logits(logits, jax.random.key(seed), 0.0)
    np.testing.assert_array_equal(got, np.argmax(np.asarray(logits), axis=-1))
