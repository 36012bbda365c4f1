"""Beam search over the sampler's cache interface (`init_decoding` / `decode`).

The prompt is prefilled once for the B rows, the cache is tiled to B*K beams,
and one compiled `lax.scan` then runs every step: expand each live beam by
every token, keep the best, and reorder the cache rows to the chosen parents.

With an end-of-sequence id, a beam that emits it is finished: its tokens stop
(the rest is eos) and its score is frozen. As in Flax's lm1b and t5x beam
search, each step keeps the top 2K candidates: at most K of them end in eos
(one per parent), so K live beams always remain and finished beams cannot
starve the live ones. Scores are GNMT length-normalised log-probabilities,
logprob_sum / ((5 + length) / 6) ** alpha, with length counting the eos.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgen.errors import UserError
from jaxgen.sample.decode import mask_logits


def beam_search(graphdef: nnx.GraphDef, params: nnx.State, prompt_BP: np.ndarray,
                num_tokens: int, *, beam_size: int, length_penalty: float = 1.0,
                eos_id: int | None = None, vocab_size: int | None = None,
                max_len: int | None = None,
                exclude_ids: tuple[int, ...] = (),
                source: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """The `beam_size` best continuations of each prompt row, best first.

  Returns tokens [B, K, num_tokens] (int32; eos-padded after an eos) and
  their scores [B, K] (float32; `length_penalty` is GNMT's alpha, 0 gives
  plain log-probability sums). Log-probabilities are normalised over the
  first `vocab_size` ids (the tokenizer's) minus `exclude_ids`, so padded
  ids (and pad and bos when excluded) are never chosen.
  Hypotheses that reach `num_tokens` without eos compete with the finished
  ones at length `num_tokens`. A slot no hypothesis can fill (K larger than
  the number of possible sequences) scores -inf. Beam search does not window:
  with a context limit `max_len`, prompt and new tokens must fit in it.
  A conditional model takes `source` = (tokens [B, S], segment ids [B, S]);
  it is encoded once, and its cross-attention keys/values are shared by the
  beams of its row.
  """
  prompt_BP = np.asarray(prompt_BP)
  if prompt_BP.ndim != 2 or prompt_BP.shape[1] == 0:
    raise UserError(f"beam search needs a [batch, length] prompt of at least one token, "
                    f"got shape {prompt_BP.shape}")
  if beam_size < 1 or num_tokens < 1:
    raise UserError(f"beam_size={beam_size} and num_tokens={num_tokens} must be at least 1")
  p = prompt_BP.shape[1]
  if max_len is not None and p + num_tokens > max_len:
    raise UserError(f"the prompt ({p} tokens) plus {num_tokens} new tokens exceeds the model's "
                    f"context of {max_len}; ask for at most {max_len - p} new tokens")
  if eos_id is not None and not 0 <= eos_id < (vocab_size or np.iinfo(np.int32).max):
    raise UserError(f"eos_id={eos_id} is not a token id below vocab_size={vocab_size}")
  tokens_BKN, scores_BK = _beam_search(graphdef, params, jnp.asarray(prompt_BP, jnp.int32),
                                       num_tokens, beam_size, jnp.float32(length_penalty), eos_id,
                                       vocab_size, tuple(exclude_ids),
                                       None if source is None else tuple(
                                           jnp.asarray(x, jnp.int32) for x in source))
  return np.asarray(tokens_BKN, np.int32), np.asarray(scores_BK, np.float32)


def length_normaliser(length, alpha: float):
  """GNMT's length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016)."""
  return ((5.0 + length) / 6.0) ** alpha


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 6, 7, 8))
def _beam_search(graphdef, params, prompt_BP, num_tokens, beam_size, alpha, eos_id,
                 vocab_size, exclude_ids, source):
  model = nnx.merge(graphdef, params)
  b, p = prompt_BP.shape
  k, n = beam_size, num_tokens
  cache = model.init_decoding(b, p + n, source)
  logits_BPV, cache = model.decode(prompt_BP, cache)
  v = logits_BPV.shape[-1]
  if eos_id is not None and eos_id >= v:
    raise UserError(f"eos_id={eos_id} is not below the model's vocabulary size {v}")
  layout = _batch_layout(model, p + n, source)
  # Row b*K + j of the tiled cache is beam j of prompt row b.
  cache = _map_rows(lambda x, a: jnp.repeat(x, k, axis=a), cache, layout)
  # Leaves that decoding only reads (an encoder-decoder's cross-attention keys and
  # values, its source mask) hold K equal copies per prompt row, so moving a beam to
  # a parent of the same row leaves them as they are: they are not reordered.
  reordered = [lay if moves else None
               for lay, moves in zip(layout, _written_leaves(model, cache, b * k))]

  def log_probs(logits_MV):
    return jax.nn.log_softmax(mask_logits(logits_MV, vocab_size, exclude_ids), axis=-1)

  # Only beam 0 is live at first; the others' -inf keeps K copies of the
  # prompt from filling the first step with duplicates.
  logp_BKV = jnp.broadcast_to(log_probs(logits_BPV[:, -1])[:, None], (b, k, v))
  first_logp_K = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf).astype(jnp.float32)
  fill = 0 if eos_id is None else eos_id
  beams = dict(
      live_seqs=jnp.full((b, k, n), fill, jnp.int32),
      live_logp=jnp.broadcast_to(first_logp_K, (b, k)),
      done_seqs=jnp.full((b, k, n), fill, jnp.int32),
      done_scores=jnp.full((b, k), -jnp.inf, jnp.float32))
  num_candidates = k if eos_id is None else min(2 * k, k * v)

  def select(beams, logp_BKV, i):
    """Extends the live beams by token i: the new beams, live parents and tokens [B, K]."""
    cand_BM = (beams["live_logp"][:, :, None] + logp_BKV).reshape(b, k * v)
    cand_logp_BC, cand_BC = jax.lax.top_k(cand_BM, num_candidates)
    parent_BC, token_BC = cand_BC // v, cand_BC % v
    seqs_BCN = jnp.take_along_axis(beams["live_seqs"], parent_BC[:, :, None], axis=1)
    seqs_BCN = seqs_BCN.at[:, :, i].set(token_BC)
    ended_BC = (token_BC == eos_id) if eos_id is not None else jnp.zeros_like(token_BC, bool)

    live_logp_BK, pick_BK = jax.lax.top_k(jnp.where(ended_BC, -jnp.inf, cand_logp_BC), k)
    new = dict(beams, live_logp=live_logp_BK,
               live_seqs=jnp.take_along_axis(seqs_BCN, pick_BK[:, :, None], axis=1))
    if eos_id is not None:
      ended_scores_BC = jnp.where(ended_BC, cand_logp_BC / length_normaliser(i + 1, alpha),
                                  -jnp.inf)
      new["done_scores"], keep_BK = jax.lax.top_k(
          jnp.concatenate([beams["done_scores"], ended_scores_BC], axis=1), k)
      new["done_seqs"] = jnp.take_along_axis(
          jnp.concatenate([beams["done_seqs"], seqs_BCN], axis=1), keep_BK[:, :, None], axis=1)
    parent_BK = jnp.take_along_axis(parent_BC, pick_BK, axis=1)
    return new, parent_BK, jnp.take_along_axis(token_BC, pick_BK, axis=1)

  def step(carry, i):
    beams, logp_BKV, cache = carry
    beams, parent_BK, token_BK = select(beams, logp_BKV, i)
    rows_M = (jnp.arange(b)[:, None] * k + parent_BK).reshape(b * k)
    cache = _map_rows(lambda x, a: jnp.take(x, rows_M, axis=a), cache, reordered)
    logits_M1V, cache = model.decode(token_BK.reshape(b * k, 1), cache)
    return (beams, log_probs(logits_M1V[:, 0]).reshape(b, k, v), cache), None

  # The last token needs no decode after it: scan n - 1 steps, then select.
  (beams, logp_BKV, _), _ = jax.lax.scan(step, (beams, logp_BKV, cache), jnp.arange(n - 1))
  beams, _, _ = select(beams, logp_BKV, n - 1)

  # Beams still live after n tokens are complete hypotheses of length n.
  scores_BC = jnp.concatenate(
      [beams["done_scores"], beams["live_logp"] / length_normaliser(n, alpha)], axis=1)
  seqs_BCN = jnp.concatenate([beams["done_seqs"], beams["live_seqs"]], axis=1)
  scores_BK, best_BK = jax.lax.top_k(scores_BC, k)
  return jnp.take_along_axis(seqs_BCN, best_BK[:, :, None], axis=1), scores_BK


def _batch_layout(model, cache_len: int, source=None) -> list[tuple[int, int] | None]:
  """Per cache leaf, the axis that grows with the batch and its entries per row (None for
  e.g. a scalar index).

  Found by comparing the cache's shapes for batch 1 and 2, so any model's
  cache layout works (Transformer k/v [B*K, S, H]: K entries per row; LSTM
  (h, c) [B, H]: one).
  """
  def rows(m):
    return None if source is None else tuple(jnp.repeat(x[:1], m, axis=0) for x in source)
  one = jax.tree.leaves(jax.eval_shape(lambda: model.init_decoding(1, cache_len, rows(1))))
  two = jax.tree.leaves(jax.eval_shape(lambda: model.init_decoding(2, cache_len, rows(2))))
  layout = []
  for x1, x2 in zip(one, two):
    axis = next((ax for ax, (s1, s2) in enumerate(zip(x1.shape, x2.shape)) if s1 != s2), None)
    layout.append(None if axis is None else (axis, x1.shape[axis]))
  return layout


def _written_leaves(model, cache, rows: int) -> list[bool]:
  """Per cache leaf, whether one decoding step can change it: False where the step's
  output leaf is its input leaf, unchanged (read from the traced program)."""
  tokens = jax.ShapeDtypeStruct((rows, 1), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda c, t: model.decode(t, c)[1])(cache, tokens).jaxpr
  cache_in = jaxpr.invars[:len(jax.tree.leaves(cache))]
  if len(jaxpr.outvars) != len(cache_in):  # another cache structure: reorder everything
    return [True] * len(cache_in)
  return [out is not var for out, var in zip(jaxpr.outvars, cache_in)]


def _map_rows(fn, cache, layout):
  """`fn(leaf, axis)` on every cache leaf that has a batch axis, seen with one entry per
  row on that axis (a row's entries moved as one); others unchanged."""
  leaves, treedef = jax.tree.flatten(cache)
  out = []
  for x, lay in zip(leaves, layout):
    if lay is None:
      out.append(x)
      continue
    axis, per_row = lay
    shape = x.shape
    rows = x.reshape(shape[:axis] + (shape[axis] // per_row, per_row) + shape[axis + 1:])
    out.append(fn(rows, axis).reshape(shape[:axis] + (-1,) + shape[axis + 1:]))
  return treedef.unflatten(out)
