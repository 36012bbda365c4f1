"""Transformer encoder-decoder: teacher forcing == cached decoding, padding and packing
change nothing, beam 1 == greedy, beam == exhaustive search, batched beams == one source
at a time, scan == loop."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig
from jaxgen.models.transformer import TransformerConfig
from jaxgen.sample import beam, decode

DEC = TransformerConfig(vocab_size=128, max_len=16, num_layers=2, num_heads=4, embed_dim=32)
VARIANTS = {
    "base": {},
    "llama": dict(position="rope", norm="rmsnorm", mlp="swiglu", num_kv_heads=2,
                  tie_embeddings=False),
    "scan_remat": dict(scan_layers=True, remat="full", num_kv_heads=1, use_bias=True),
}


def model(share=True, cache_cross_kv=True, **overrides):
  cfg = EncoderDecoderConfig(decoder=dataclasses.replace(DEC, **overrides),
                             num_encoder_layers=3, max_source_len=12, share_embeddings=share,
                             cache_cross_kv=cache_cross_kv)
  return EncoderDecoder(cfg, rngs=nnx.Rngs(0))


def ints(shape, seed, lo=3, hi=100):
  return jax.random.randint(jax.random.key(seed), shape, lo, hi)


def source_with_padding(b=2, s=12, lengths=(7, 12)):
  src = ints((b, s), 1)
  seg = (jnp.arange(s)[None] < jnp.asarray(lengths)[:, None]).astype(jnp.int32)
  return jnp.where(seg == 1, src, 0), seg


@pytest.mark.parametrize("name", [*VARIANTS, "no_cross_cache", "scan_no_cross_cache"])
@pytest.mark.slow
def test_teacher_forced_logits_equal_cached_step_by_step_decoding(name):
  if "no_cross_cache" in name:  # the benchmark's baseline decodes the same
    m = model(cache_cross_kv=False, scan_layers=name.startswith("scan"))
  else:
    m = model(share=name != "llama", **VARIANTS[name])
  src, seg = source_with_padding()
  tgt = ints((2, 10), 2)
  full = m(src, tgt, source_segment_ids_BS=seg)
  cache = m.init_decoding(2, 16, (src, seg))
  steps = []
  # A 3-token prefill with per-row lengths, then single tokens.
  logits_B, cache = m.prefill(tgt[:, :3], jnp.asarray([3, 3]), cache)
  np.testing.assert_allclose(logits_B, full[:, 2], atol=2e-5, rtol=1e-5)
  for i in range(3, 10):
    logits, cache = m.decode(tgt[:, i:i + 1], cache)
    steps.append(logits[:, 0])
  np.testing.assert_allclose(np.stack(steps, 1), full[:, 3:], atol=2e-5, rtol=1e-5)


@pytest.mark.slow
def test_source_padding_changes_nothing():
  m = model()
  src, seg = source_with_padding(lengths=(7, 9))
  tgt = ints((2, 10), 2)
  logits = m(src, tgt, source_segment_ids_BS=seg)
  # The same sources, cut to their lengths, one at a time.
  for b, n in enumerate((7, 9)):
    alone = m(src[b:b + 1, :n], tgt[b:b + 1])
    np.testing.assert_allclose(logits[b:b + 1], alone, atol=2e-5, rtol=1e-5)
  # Whatever sits in the padding.
  noisy = jnp.where(seg == 1, src, ints(src.shape, 9))
  np.testing.assert_allclose(m(noisy, tgt, source_segment_ids_BS=seg), logits, atol=1e-6)


@pytest.mark.slow
def test_no_attention_across_packed_examples():
  """Gradients of a packed row's loss at example 2's targets w.r.t. example 1's
  source and target embeddings are exactly zero (and not zero within example 2)."""
  m = model()
  graphdef, params = nnx.split(m)
  src = ints((1, 12), 1)
  src_seg = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 3])
  src_pos = jnp.asarray([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0]])
  tgt = ints((1, 10), 2)
  tgt_seg = jnp.asarray([[1] * 4 + [2] * 5 + [0]])
  tgt_pos = jnp.asarray([[0, 1, 2, 3, 0, 1, 2, 3, 4, 0]])

  def loss(src_x, tgt_x):
    mm = nnx.merge(graphdef, params)
    src_embed = mm._embed

    def embed(table, tokens, positions, name):  # inputs as differentiable embeddings
      x = src_embed(table, tokens, positions, name)
      return x + (src_x if name == "source_pos_embed" else tgt_x)

    mm._embed = embed
    logits = mm(src, tgt, source_segment_ids_BS=src_seg, segment_ids_BT=tgt_seg,
                source_positions_BS=src_pos, positions_BT=tgt_pos)
    return logits[0, 4:9].sum()

  g_src, g_tgt = jax.grad(loss, argnums=(0, 1))(jnp.zeros((1, 12, 32)), jnp.zeros((1, 10, 32)))
  assert np.abs(g_src[0, :5]).max() == 0 and np.abs(g_src[0, 9:]).max() == 0
  assert np.abs(g_tgt[0, :4]).max() == 0 and np.abs(g_tgt[0, 9:]).max() == 0
  assert np.abs(g_src[0, 5:9]).min() > 0 and np.abs(g_tgt[0, 4:9]).max() > 0


@pytest.mark.slow
def test_scan_equals_loop():
  looped, scanned = model(), model(scan_layers=True)
  # Same parameters: stack the looped model's blocks.
  src, seg = source_with_padding()
  tgt = ints((2, 10), 2)
  _, lp = nnx.split(looped)
  gs, sp = nnx.split(scanned)
  sp = jax.tree.map(lambda x: x, sp)
  flat = dict(nnx.to_flat_state(lp))
  new = {}
  for path, v in nnx.to_flat_state(sp):
    if path[0] in ("blocks", "encoder_blocks"):
      n = len(jax.tree.leaves(v)[0])
      new[path] = v.replace(jnp.stack([flat[(path[0], i) + path[1:]].get_value()
                                       for i in range(n)]))
    else:
      new[path] = flat[path]
  sp = nnx.from_flat_state(new)
  got = nnx.merge(gs, sp)(src, tgt, source_segment_ids_BS=seg)
  np.testing.assert_allclose(got, looped(src, tgt, source_segment_ids_BS=seg), atol=2e-5)


def _greedy_rows(graphdef, params, srcs, n):
  bos = 1
  return decode.generate(graphdef, params, [np.asarray([bos])] * len(srcs), n, temperature=0,
                         sources=srcs, source_width=12, vocab_size=100)


@pytest.mark.slow
def test_batched_greedy_equals_one_at_a_time_and_beam_1():
  graphdef, params = nnx.split(model())
  srcs = [np.asarray(ints((n,), n)) for n in (3, 12, 7)]
  together = _greedy_rows(graphdef, params, srcs, 8)
  for s, row in zip(srcs, together):
    np.testing.assert_array_equal(_greedy_rows(graphdef, params, [s], 8)[0], row)
  src = decode._source_buffer(srcs, 12)
  tokens_BKN, _ = beam.beam_search(graphdef, params, np.ones((3, 1), np.int32), 8,
                                   beam_size=1, vocab_size=100, source=src)
  np.testing.assert_array_equal(tokens_BKN[:, 0], together)


@pytest.mark.slow
def test_beam_search_matches_exhaustive_enumeration():
  # A tiny vocabulary (ids 0..3 allowed) and 3 steps: 64 sequences, scored exactly. With
  # 16 = 4^2 beams every 2-token prefix survives, so the 16 best are exactly the top 16.
  m = model()
  graphdef, params = nnx.split(m)
  src = decode._source_buffer([np.asarray(ints((5,), 3))], 12)
  vocab, n = 4, 3
  seqs = np.asarray(list(itertools.product(range(vocab), repeat=n)), np.int32)
  inputs = np.concatenate([np.ones((len(seqs), 1), np.int32), seqs[:, :-1]], 1)
  many = tuple(np.repeat(x, len(seqs), 0) for x in src)
  logits = m(jnp.asarray(many[0]), jnp.asarray(inputs), source_segment_ids_BS=many[1])
  logp = jax.nn.log_softmax(logits[..., :vocab], -1)
  scores = np.take_along_axis(np.asarray(logp), seqs[..., None], -1)[..., 0].sum(1)
  best = np.argsort(-scores)[:16]
  tokens_BKN, scores_BK = beam.beam_search(graphdef, params, np.ones((1, 1), np.int32), n,
                                           beam_size=16, length_penalty=0.0, vocab_size=vocab,
                                           source=src)
  np.testing.assert_array_equal(tokens_BKN[0], seqs[best])
  np.testing.assert_allclose(scores_BK[0], scores[best], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["base", "scan_remat"])
@pytest.mark.slow
def test_batched_beam_search_equals_one_source_at_a_time(name):
  # Beams of different sources in one batch: the cross-attention cache, which beam
  # search leaves in place instead of reordering, must still belong to each row.
  graphdef, params = nnx.split(model(**VARIANTS[name]))
  srcs = [np.asarray(ints((n,), n)) for n in (3, 12, 7)]

  def search(rows):
    return beam.beam_search(graphdef, params, np.ones((len(rows), 1), np.int32), 8,
                            beam_size=4, vocab_size=100, eos_id=2,
                            source=decode._source_buffer(rows, 12))

  tokens_BKN, scores_BK = search(srcs)
  for i, s in enumerate(srcs):
    one_tokens, one_scores = search([s])
    np.testing.assert_array_equal(one_tokens[0], tokens_BKN[i])
    np.testing.assert_allclose(one_scores[0], scores_BK[i], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_beam_search_reorders_only_what_decoding_writes():
  m = model()
  src = decode._source_buffer([np.asarray(ints((5,), 3))], 12)
  cache = m.init_decoding(1, 8, src)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(cache)[0]]
  written = dict(zip(paths, beam._written_leaves(m, cache, 1)))
  assert not any(v for p, v in written.items() if p.startswith(("['ck']", "['cv']", "['mask']")))
  assert all(v for p, v in written.items() if p.startswith(("['k']", "['v']", "['index']")))
