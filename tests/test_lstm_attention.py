"""LSTM encoder-decoder with attention: teacher forcing == step-by-step decoding,
source padding changes nothing, the bidirectional encoder never reads padding,
batched greedy == one at a time == beam 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen.models.lstm_attention import LSTMAttention, LSTMAttentionConfig
from jaxgen.sample import beam, decode

pytestmark = pytest.mark.slow  # every test here runs for seconds on 2 cores

CFG = LSTMAttentionConfig(vocab_size=128, max_len=16, max_source_len=12, embed_dim=24,
                          hidden_size=32, num_layers=2, num_encoder_layers=2)


def model(**overrides):
  import dataclasses
  return LSTMAttention(dataclasses.replace(CFG, **overrides), rngs=nnx.Rngs(0))


def ints(shape, seed):
  return jax.random.randint(jax.random.key(seed), shape, 3, 100)


def padded_source(lengths=(7, 12)):
  src = ints((2, 12), 1)
  seg = (jnp.arange(12)[None] < jnp.asarray(lengths)[:, None]).astype(jnp.int32)
  return jnp.where(seg == 1, src, 0), seg


VARIANTS = {"luong_bi": {}, "bahdanau_uni": dict(attention="bahdanau", bidirectional=False),
            "separate_embeddings": dict(share_embeddings=False, num_layers=1)}


@pytest.mark.parametrize("name", VARIANTS)
def test_teacher_forced_logits_equal_step_by_step_decoding(name):
  m = model(**VARIANTS[name])
  src, seg = padded_source()
  tgt = ints((2, 9), 2)
  full = m.batch_logits({"source": src, "source_segment_ids": seg, "inputs": tgt})
  cache = m.init_decoding(2, 16, (src, seg))
  first, cache = m.prefill(tgt[:, :3], jnp.asarray([3, 3]), cache)
  np.testing.assert_allclose(first, full[:, 2], atol=2e-5, rtol=1e-5)
  steps = []
  for i in range(3, 9):
    logits, cache = m.decode(tgt[:, i:i + 1], cache)
    steps.append(logits[:, 0])
  np.testing.assert_allclose(np.stack(steps, 1), full[:, 3:], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["luong_bi", "bahdanau_uni"])
def test_source_padding_changes_nothing(name):
  m = model(**VARIANTS[name])
  src, seg = padded_source(lengths=(7, 9))
  tgt = ints((2, 9), 2)
  logits = m.batch_logits({"source": src, "source_segment_ids": seg, "inputs": tgt})
  for b, n in enumerate((7, 9)):
    alone = m.batch_logits({"source": src[b:b + 1, :n], "inputs": tgt[b:b + 1]})
    np.testing.assert_allclose(logits[b:b + 1], alone, atol=2e-5, rtol=1e-5)
  noisy = jnp.where(seg == 1, src, ints(src.shape, 9))
  np.testing.assert_allclose(
      m.batch_logits({"source": noisy, "source_segment_ids": seg, "inputs": tgt}), logits,
      atol=1e-6)


def test_batched_greedy_equals_one_at_a_time_and_beam_1():
  graphdef, params = nnx.split(model())
  srcs = [np.asarray(ints((n,), n)) for n in (3, 12, 7)]
  run = lambda ss: decode.generate(graphdef, params, [np.asarray([1])] * len(ss), 8,
                                   temperature=0, sources=ss, source_width=12, vocab_size=100)
  together = run(srcs)
  for s, row in zip(srcs, together):
    np.testing.assert_array_equal(run([s])[0], row)
  tokens_BKN, _ = beam.beam_search(graphdef, params, np.ones((3, 1), np.int32), 8,
                                   beam_size=1, vocab_size=100,
                                   source=decode._source_buffer(srcs, 12))
  np.testing.assert_array_equal(tokens_BKN[:, 0], together)


def test_gradients_flow_to_every_parameter():
  m = model(attention="bahdanau")
  graphdef, params = nnx.split(m)
  src, seg = padded_source()
  batch = {"source": src, "source_segment_ids": seg, "inputs": ints((2, 9), 2)}
  grads = jax.grad(lambda p: nnx.merge(graphdef, p).batch_logits(batch).sum())(params)
  for path, g in nnx.to_flat_state(grads):
    assert np.abs(np.asarray(g.get_value())).max() > 0, path
