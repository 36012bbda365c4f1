"""Sampling: cached decoding equals full recomputation; seeds and filters behave."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxgen.sample
import jaxgen.sample.restore
from jaxgen.models.lstm import LSTMConfig, LSTMLM
from jaxgen.models.transformer import TransformerConfig, TransformerLM
from jaxgen.sample.decode import generate, sample_logits
from tests.helpers import reverse_config, tiny_transformer_config
from tests.sample_helpers import RiggedLM, RiggedSeq2Seq


def greedy_by_recompute(model, prompt, num_tokens, window=None):
  """Greedy decoding by full forward passes, nanoGPT's way: each token is the argmax
  after the last `window` tokens of the text (all of it without a window).

  Each context is right-padded to one length so the forward pass compiles
  once; causality makes the padding invisible to the last real position.
  """
  graphdef, params = nnx.split(model)
  width = window or len(prompt) + num_tokens
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
  seq = list(prompt)
  for _ in range(num_tokens):
    context = seq[-window:] if window else seq
    padded = jnp.asarray([context + [0] * (width - len(context))])
    seq.append(int(jnp.argmax(forward(params, padded)[0, len(context) - 1, :65])))
  return seq[len(prompt):]


def _spread(model, scale=20.0):
  """The model with its attention weights scaled up: a random init's greedy text then
  depends on its context instead of repeating a token or two."""
  graphdef, params = nnx.split(model)
  def scaled(path, x):
    name = jax.tree_util.keystr(path)
    return x * scale if "attn" in name and "norm" not in name else x
  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(scaled, params))


@pytest.mark.parametrize("position", ["rope", "learned"])
@pytest.mark.slow
def test_greedy_reads_the_whole_context_then_crops_as_nanogpt(position):
  cfg = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=2, embed_dim=32,
                          position=position, tie_embeddings=False)
  model = _spread(TransformerLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(5)
  # Short, mid-length and whole-context prompts, 30 tokens each: every one
  # runs past the context of 16, batched together.
  prompts = [list(rng.integers(0, 65, n)) for n in (3, 10, 16)]
  got = generate(graphdef, params, prompts, 30, temperature=0.0, vocab_size=65, max_len=16)
  for prompt, row in zip(prompts, got):
    want = greedy_by_recompute(model, prompt, 30, window=16)
    assert list(row) == want
    assert len(set(want)) >= 4, want  # a text that depends on its context
  # The test tells rules apart: re-reading half the context every 8 tokens
  # (this module's rule until it was fixed) gives other text.
  assert list(got[0]) != _half_window_greedy(model, prompts[0], 30, 16)


@pytest.mark.slow
def test_window_stride_rereads_the_context_every_k_tokens():
  cfg = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=2, embed_dim=32,
                          position="rope", tie_embeddings=False)
  model = _spread(TransformerLM(cfg, rngs=nnx.Rngs(1)))
  graphdef, params = nnx.split(model)
  prompts = [[3, 9, 4], list(range(1, 12))]
  got = generate(graphdef, params, prompts, 30, temperature=0.0, vocab_size=65, max_len=16,
                 window_stride=4)
  for prompt, row in zip(prompts, got):
    # The whole context while the text fits, then the last 13 tokens re-read
    # every 4: each token reads 13 to 16 tokens.
    text = list(prompt) + greedy_by_recompute(model, prompt, 17 - len(prompt))
    while len(text) < len(prompt) + 30:
      n = min(4, len(prompt) + 30 - len(text))
      text += greedy_by_recompute(model, text[-13:], n)
    assert list(row) == text[len(prompt):]
  exact = generate(graphdef, params, prompts, 30, temperature=0.0, vocab_size=65, max_len=16)
  assert not np.array_equal(got, exact)  # the rules differ on this model
  with pytest.raises(ValueError, match="window_stride=17"):
    generate(graphdef, params, prompts, 30, max_len=16, window_stride=17)


def _half_window_greedy(model, prompt, num_tokens, context):
  """The old rule: the prompt's last context // 2 tokens, then segments of
  context // 2 new tokens, each restarting from the last half context."""
  seq, window = list(prompt[-(context // 2):]), context // 2
  out = []
  while len(out) < num_tokens:
    n = min(context - window, num_tokens - len(out))
    new = greedy_by_recompute(model, seq[-window:], n)
    out += new
    seq += new
  return out


def test_streams_of_different_prompts_are_independent():
  # Uniform logits: each token is a uniform draw from 48 ids, so two prompts'
  # samples agree at a position with probability 1/48 when their streams are
  # independent, and always when they share one.
  vocab, n_prompts, n_tokens = 48, 24, 64
  graphdef, params = nnx.split(RiggedLM(np.zeros(vocab)))
  prompts = [[p, p + 1] for p in range(n_prompts)]
  got = generate(graphdef, params, prompts, n_tokens, temperature=1.0,
                 row_ids=[0] * n_prompts)  # sample 0 of every prompt
  same = (got[:, None, :] == got[None, :, :]).mean(axis=-1)
  pairs = same[np.triu_indices(n_prompts, 1)]
  # 276 pairs x 64 positions: the mean's standard deviation is about 0.0017.
  assert abs(pairs.mean() - 1 / vocab) < 0.01, pairs.mean()
  counts = np.bincount(got.ravel(), minlength=vocab)
  expected = got.size / vocab
  # 47 degrees of freedom: exceeded by uniform draws with probability ~1e-4.
  assert ((counts - expected) ** 2 / expected).sum() < 90
  # The same prompt and sample index draw the same stream, alone or in a batch.
  again = generate(graphdef, params, [prompts[3]], n_tokens, temperature=1.0, row_ids=[0])
  np.testing.assert_array_equal(again[0], got[3])


@pytest.mark.slow
def test_lstm_greedy_matches_recompute():
  cfg = LSTMConfig(vocab_size=128, embed_dim=16, hidden_size=16, num_layers=2)
  model = LSTMLM(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  got = generate(graphdef, params, np.array([[1, 2, 3]]), 20, temperature=0.0, vocab_size=65)
  assert list(got[0]) == greedy_by_recompute(model, [1, 2, 3], 20)


@pytest.mark.slow
def test_long_prompt_prefilled_in_chunks_matches_recompute():
  # 21 prompt tokens take two prefill chunks; a context of 40 is no whole
  # number of chunks.
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
@pytest.mark.slow
def test_prompts_of_any_lengths_batched_equal_one_at_a_time_with_one_program(kind):
  if kind == "transformer":
    cfg = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=2, embed_dim=32,
                            position="rope")
    graphdef, params = nnx.split(TransformerLM(cfg, rngs=nnx.Rngs(0)))
    max_len = 16  # 20 tokens after a 12-token prompt: 5 from the cache, then 15 cropped
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


@pytest.mark.slow
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


# Ids 2 and 3 play pad and bos, 5 and 6 the vocabulary's padding past a
# tokenizer of 5 ids: the four most likely tokens are the four never allowed.
_RIGGED = jnp.array([0.0, 1.0, 8.0, 9.0, 0.5, 10.0, 10.0])
_ALLOWED = {0, 1, 4}


@pytest.mark.slow
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


class _SharedEos:
  """A tokenizer of 6 ids, one character each ("PEBabc"), whose eos (id 1) is also its
  bos or its pad (as GPT-2's bos is its eos); the other of the two is id 0 or 2."""

  vocab_size = 6
  eos_id = 1

  def __init__(self, shared):
    self.pad_id, self.bos_id = (0, 1) if shared == "bos" else (1, 2)

  def encode(self, text):
    return np.asarray(["PEBabc".index(c) for c in text], np.int32)

  def decode(self, ids):
    return "".join("PEBabc"[i] for i in ids)  # pad and bos show, were they drawn


@pytest.mark.parametrize("shared", ["bos", "pad"])
@pytest.mark.parametrize("path", ["prompt", "source"])
def test_eos_stays_possible_when_pad_or_bos_share_its_id(monkeypatch, path, shared):
  # The favourites are the vocabulary's padding (ids 6, 7), then pad and bos where
  # they are not eos, then eos just ahead of "a": eos must be the first allowed token.
  tok = _SharedEos(shared)
  never = [i for i in (tok.pad_id, tok.bos_id) if i != tok.eos_id]
  logits = np.array([0.0, 3.5, 0.0, 3.0, 0.0, 0.0, 20.0, 20.0], np.float32)
  logits[never] = 10.0
  if path == "prompt":
    cfg, model, given = tiny_transformer_config("text:unused"), RiggedLM(logits), dict(prompt="ab")
  else:
    cfg, model, given = reverse_config(), RiggedSeq2Seq(logits, context=8), dict(source="ab")
  graphdef, params = nnx.split(model)
  monkeypatch.setattr(jaxgen.sample.restore, "restore",
                      lambda *args, **kwargs: (graphdef, params, cfg, tok))
  start = given.get("prompt", "")

  def new_texts(**kwargs):
    texts = jaxgen.sample.generate("unused", max_new_tokens=6, **given, **kwargs)
    assert all(t.startswith(start) for t in texts), texts
    return [t[len(start):] for t in texts]

  assert new_texts(temperature=0) == [""]  # greedy: eos first
  assert new_texts(beam_size=2)[0] == ""
  sampled = new_texts(temperature=1.0, num_samples=16, seed=1)
  # Never pad or bos (which show) nor padding (which `decode` cannot read).
  assert not set("".join(sampled)) & {"PEBabc"[i] for i in never}, sampled
  assert any(len(t) < 6 for t in sampled) and any(sampled), sampled  # eos ends some texts


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
