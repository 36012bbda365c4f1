"""Autoregressive sampling with a key/value cache (Transformer) or carry (LSTM).

Every model exposes `init_decoding(batch_size, max_len, source)` (see
`jaxgen.models.interface`; a conditional model encodes its source there, once), `prefill(tokens_BT,
lengths_B, cache)` (a chunk of prompt tokens, each row's own count of them),
`decode(tokens_BT, cache)` and `context_len`.

Each new token is predicted from the whole text before it, up to the model's
context C. While the text fits, one compiled program prefills the prompts
(right-padded into a [B, C] buffer, in chunks of `_CHUNK` tokens) and then
continues each row token by token from its key/value cache. Past the context
the rule is nanoGPT's: every further token is predicted from the last C
tokens, recomputed by one C-wide prefill per token (a cache cannot slide:
a kept key depends on the tokens that fell out of the window). Prompt lengths
and token counts are run-time values, so one program (per batch size and
buffer width) serves every prompt, and prompts of different lengths share a
batch.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Prompt tokens per prefill call: a batch's prefill costs as many calls as its
# longest prompt has chunks. Small, so a short prompt wastes little work on
# padding (at batch 64, the 6x384 recipe: a call for a 1-token prompt took
# 205 ms with chunks of 8, 260 ms with 16), and at batch 64 still a matmul of
# 512 rows.
_CHUNK = 8
# A model without a context limit (LSTM) gets a buffer of the next power of
# two at least this wide, so nearby lengths share a program.
_MIN_WIDTH = 64
# Tokens past the context per call of the sliding program: one program for
# every length, and a call is fetched before the next is dispatched (queued
# collectives of sharded params can abort on host CPUs).
_SLIDE_CALL = 64


def generate(graphdef: nnx.GraphDef, params: nnx.State,
             prompts: np.ndarray | Sequence[np.ndarray], num_tokens: int, *, seed: int = 0,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             repetition_penalty: float = 1.0, window_stride: int = 1,
             vocab_size: int | None = None, max_len: int | None = None,
             exclude_ids: tuple[int, ...] = (),
             row_ids: Sequence[int] | None = None,
             sources: Sequence[np.ndarray] | None = None,
             source_width: int | None = None) -> np.ndarray:
  """Samples `num_tokens` tokens after each prompt; returns them [B, num_tokens].

  `prompts` is a [B, P] array or B token sequences of any lengths (at least
  one token each). Row b draws from its own random stream, derived from
  `seed`, the row's prompt (and source) tokens and its sample index
  `row_ids[b]` (default b): what a row generates does not depend on the
  other rows of the batch, and different prompts draw independent numbers.
  `vocab_size` (the tokenizer's, before padding) keeps padded ids from being
  drawn, nor are `exclude_ids` (pad and bos, which never follow a token in
  training). `repetition_penalty` > 1 discourages every token already in the
  prompt or the text generated so far (Hugging Face's rule: a positive logit
  divided by it, a negative one multiplied), before temperature and filters.

  A language model with a context C (`max_len`, default the model's own)
  reads the whole prompt, up to its last C tokens, and past the context
  predicts each token from the last C (nanoGPT's crop). A `window_stride` k
  > 1 trades that for speed: past the context, the last C - k + 1 tokens are
  re-read every k tokens, so each token reads between C - k + 1 and C. A
  model without a context (LSTM) reads everything. A conditional (encoder-decoder) model takes one
  source token sequence per row in `sources`, right-padded to `source_width`
  (default: the longest; a fixed width makes a row's result independent of
  the others in its batch); its prompt and new tokens must fit its context.
  """
  rows = [np.asarray(r, np.int32).reshape(-1) for r in prompts]
  if not rows or min(len(r) for r in rows) == 0:
    raise ValueError("generate needs at least one prompt, each of at least one token")
  if num_tokens < 1:
    raise ValueError(f"num_tokens={num_tokens} must be at least 1")
  row_ids = np.arange(len(rows)) if row_ids is None else np.asarray(row_ids)
  if len(row_ids) != len(rows):
    raise ValueError(f"{len(row_ids)} row_ids for {len(rows)} prompts")
  if sources is not None and len(sources) != len(rows):
    raise ValueError(f"{len(sources)} sources for {len(rows)} prompts")
  streams = stream_ids(rows, row_ids, sources)
  source = None if sources is None else _source_buffer(sources, source_width)
  sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                  repetition_penalty=repetition_penalty, vocab_size=vocab_size,
                  exclude_ids=tuple(exclude_ids))
  run = functools.partial(_run_cached, graphdef, params, seed=seed, streams=streams,
                          source=source, sampling=sampling)
  context = max_len or nnx.merge(graphdef, params).context_len
  if context is not None and not 1 <= window_stride <= context:
    raise ValueError(f"window_stride={window_stride} must be in [1, {context}] (the context)")
  longest = max(len(r) for r in rows)
  if context is None:
    width = max(_MIN_WIDTH, 1 << (longest + num_tokens - 1).bit_length())
    return run(rows, rows, num_tokens, width=width, offset=0)
  if source is not None and longest + num_tokens - 1 > context:
    raise ValueError(f"a {longest}-token prompt plus {num_tokens} new tokens exceeds the "
                     f"decoder's context of {context}")
  # While every row's text fits, the cache serves: a row of L tokens can get
  # C - L + 1 more, the last predicted from a full context.
  window = [r[-context:] for r in rows]
  cached = min(num_tokens, context + 1 - max(len(r) for r in window))
  new_BN = run(rows, window, cached, width=context, offset=0)
  if cached == num_tokens:
    return new_BN
  texts = [np.concatenate([r, n]) for r, n in zip(rows, new_BN)]
  out = [new_BN]
  while (done := sum(o.shape[1] for o in out)) < num_tokens:
    if window_stride == 1:
      n = min(_SLIDE_CALL, num_tokens - done)
      out.append(_run_sliding(graphdef, params, texts, n, context=context, offset=done,
                              seed=seed, streams=streams, sampling=sampling))
    else:
      n = min(window_stride, num_tokens - done)
      out.append(run(texts, [t[-(context - window_stride + 1):] for t in texts], n,
                     width=context, offset=done))
    texts = [np.concatenate([t, o]) for t, o in zip(texts, out[-1])]
  return np.concatenate(out, axis=1)


def stream_ids(rows: Sequence[np.ndarray], sample_ids: np.ndarray,
               sources: Sequence[np.ndarray] | None = None) -> np.ndarray:
  """Per row, the uint32 id of its random stream: a hash of its prompt tokens, its
  source tokens (if any) and its sample index."""
  out = np.empty(len(rows), np.uint32)
  for b, row in enumerate(rows):
    h = hashlib.blake2b(digest_size=4)
    h.update(np.asarray(row, "<i4").tobytes())
    h.update(b"|")
    if sources is not None:
      h.update(np.asarray(sources[b], "<i4").reshape(-1).tobytes())
    h.update(b"|" + np.asarray(sample_ids[b], "<i8").tobytes())
    out[b] = int.from_bytes(h.digest(), "little")
  return out


def _source_buffer(sources, width):
  """(tokens [B, W], segment ids [B, W]: 1 on tokens, 0 on padding), int32."""
  lengths = [len(np.asarray(r).reshape(-1)) for r in sources]
  width = width or max(lengths)
  if max(lengths) > width:
    raise ValueError(f"a {max(lengths)}-token source exceeds the source width {width}")
  tokens_BW = np.zeros((len(sources), width), np.int32)
  for b, r in enumerate(sources):
    tokens_BW[b, :lengths[b]] = np.asarray(r).reshape(-1)
  segments_BW = (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  return tokens_BW, segments_BW


def _right_padded(rows, width):
  """(tokens [B, width] with each row at its start, lengths [B]), int32."""
  buffer_BW = np.zeros((len(rows), width), np.int32)
  for b, r in enumerate(rows):
    buffer_BW[b, :len(r)] = r
  return buffer_BW, np.asarray([len(r) for r in rows], np.int32)


def _history(rows, sampling):
  """The tokens a repetition penalty counts ([B, H], H a power of two so few
  programs serve all lengths; -1 pads), or None without a penalty."""
  if sampling["repetition_penalty"] == 1.0:
    return None
  width = max(_MIN_WIDTH, 1 << (max(len(r) for r in rows) - 1).bit_length())
  history_BH = np.full((len(rows), width), -1, np.int32)
  for b, r in enumerate(rows):
    history_BH[b, :len(r)] = r
  return history_BH


def _run_cached(graphdef, params, history, rows, num_tokens, *, width, offset, seed, streams,
                source, sampling):
  """`num_tokens` new tokens after each row (new tokens `offset`... of the text), by one
  call of the cached program."""
  buffer_BS, lengths_B = _right_padded(rows, width)
  tokens_SB = np.asarray(_cached(graphdef, params, jnp.asarray(buffer_BS), lengths_B,
                                 np.int32(num_tokens), np.uint32(seed), streams,
                                 np.int32(offset), source, _history(history, sampling),
                                 **sampling))
  return tokens_SB[:num_tokens].T


def _run_sliding(graphdef, params, texts, num_tokens, *, context, offset, seed, streams,
                 sampling):
  """`num_tokens` (at most `_SLIDE_CALL`) new tokens after each text, each predicted
  from the text's last `context` tokens."""
  buffer_BW, lengths_B = _right_padded([t[-context:] for t in texts], context + _SLIDE_CALL)
  buffer_BW = np.asarray(_sliding(graphdef, params, jnp.asarray(buffer_BW), lengths_B,
                                  np.int32(num_tokens), np.uint32(seed), streams,
                                  np.int32(offset), _history(texts, sampling),
                                  context=context, **sampling))
  return np.stack([row[n:n + num_tokens] for row, n in zip(buffer_BW, lengths_B)])


_SAMPLING = ("temperature", "top_k", "top_p", "repetition_penalty", "vocab_size",
             "exclude_ids")


def _row_keys(seed, streams_B):
  return jax.vmap(lambda r: jax.random.fold_in(jax.random.key(seed), r))(streams_B)


def _sampler(row_keys_B, *, temperature, top_k, top_p, repetition_penalty, vocab_size,
             exclude_ids):
  """sample(logits [B, V], i, seen [B, V] or None) -> token i of each row [B]: new token
  i of a row draws from its stream's i-th key, whichever program computes it."""
  def sample(logits_BV, i, seen_BV):
    if seen_BV is not None:
      logits_BV = penalize_repeats(logits_BV, seen_BV, repetition_penalty)
    keys_B = None if temperature == 0 else jax.vmap(lambda k: jax.random.fold_in(k, i))(
        row_keys_B)
    return sample_logits(logits_BV, keys_B, temperature, top_k, top_p, vocab_size, exclude_ids)
  return sample


def _seen(history_BH, vocab: int):
  """[B, V] bool: the ids in each row of `history_BH` (-1 pads)."""
  if history_BH is None:
    return None
  b = history_BH.shape[0]
  ids_BH = jnp.where(history_BH < 0, vocab, history_BH)  # out of range: dropped
  return jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], ids_BH].set(True, mode="drop")


def _mark(seen_BV, token_B):
  if seen_BV is None:
    return None
  return seen_BV.at[jnp.arange(token_B.shape[0]), token_B].set(True)


@functools.partial(jax.jit, static_argnums=0, static_argnames=_SAMPLING)
def _cached(graphdef, params, buffer_BS, lengths_B, num_tokens, seed, streams_B, offset,
            source, history_BH, **sampling):
  """Prefills each row's first lengths_B tokens of the buffer, then samples
  `num_tokens` tokens after them; returns them [S, B] (the first num_tokens rows).

  New token i of every row goes to row i of the output, one in-place write
  per step shared by all rows (cheaper than a per-row scatter into the
  prompt buffer, which a batch-1 step on CPU feels).
  """
  model = nnx.merge(graphdef, params)
  b, s = buffer_BS.shape
  padded_BX = jnp.pad(buffer_BS, ((0, 0), (0, -s % _CHUNK)))  # whole chunks to slice

  def prefill_chunk(c, carry):
    cache, last_BV = carry
    chunk_BC = jax.lax.dynamic_slice_in_dim(padded_BX, c * _CHUNK, _CHUNK, axis=1)
    n_B = jnp.clip(lengths_B - c * _CHUNK, 0, _CHUNK)
    logits_BV, cache = model.prefill(chunk_BC, n_B, cache)
    return cache, jnp.where((n_B > 0)[:, None], logits_BV, last_BV)

  # A loop carry keeps one structure, so cache leaves that prefill widens (a
  # Transformer's shared index becomes one per row) start out widened.
  cache = model.init_decoding(b, s, source)
  logits_shape, cache_shape = jax.eval_shape(
      lambda c: model.prefill(padded_BX[:, :_CHUNK], lengths_B, c), cache)
  cache = jax.tree.map(lambda x, t: jnp.broadcast_to(x, t.shape).astype(t.dtype), cache,
                       cache_shape)
  num_chunks = (jnp.max(lengths_B) + _CHUNK - 1) // _CHUNK
  cache, logits_BV = jax.lax.fori_loop(
      0, num_chunks, prefill_chunk, (cache, jnp.zeros(logits_shape.shape, jnp.float32)))

  sample = _sampler(_row_keys(seed, streams_B), **sampling)

  def step(i, carry):
    tokens_SB, logits_BV, cache, seen_BV = carry
    token_B = sample(logits_BV, offset + i, seen_BV)
    logits_B1V, cache = model.decode(token_B[:, None], cache)
    return tokens_SB.at[i].set(token_B), logits_B1V[:, 0], cache, _mark(seen_BV, token_B)

  # The last token needs no decode step after it.
  seen_BV = _seen(history_BH, logits_shape.shape[-1])
  tokens_SB, logits_BV, _, seen_BV = jax.lax.fori_loop(
      0, num_tokens - 1, step, (jnp.zeros((s, b), jnp.int32), logits_BV, cache, seen_BV))
  last = num_tokens - 1
  return tokens_SB.at[last].set(sample(logits_BV, offset + last, seen_BV))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("context", *_SAMPLING))
def _sliding(graphdef, params, buffer_BW, lengths_B, num_tokens, seed, streams_B, offset,
             history_BH, *, context, **sampling):
  """Appends `num_tokens` tokens to each row's first lengths_B tokens of the buffer, each
  predicted from the row's last `context` tokens by a fresh prefill; returns the buffer."""
  model = nnx.merge(graphdef, params)
  b = buffer_BW.shape[0]
  rows_B = jnp.arange(b)
  sample = _sampler(_row_keys(seed, streams_B), **sampling)

  def step(i, carry):
    buffer_BW, lengths_B, seen_BV = carry
    start_B = jnp.maximum(lengths_B - context, 0)
    window_BC = jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (context,)))(
        buffer_BW, start_B)
    logits_BV, _ = model.prefill(window_BC, jnp.minimum(lengths_B, context),
                                 model.init_decoding(b, context))
    token_B = sample(logits_BV, offset + i, seen_BV)
    return (buffer_BW.at[rows_B, lengths_B].set(token_B), lengths_B + 1,
            _mark(seen_BV, token_B))

  vocab = jax.eval_shape(lambda: model.prefill(buffer_BW[:, :context], lengths_B,
                                               model.init_decoding(b, context)))[0].shape[-1]
  buffer_BW, _, _ = jax.lax.fori_loop(
      0, num_tokens, step, (buffer_BW, lengths_B, _seen(history_BH, vocab)))
  return buffer_BW


def penalize_repeats(logits_BV: jax.Array, seen_BV: jax.Array, penalty: float) -> jax.Array:
  """Hugging Face's repetition penalty: a seen token's logit divided by `penalty`
  where positive, multiplied by it where negative."""
  logits_BV = logits_BV.astype(jnp.float32)
  penalized_BV = jnp.where(logits_BV > 0, logits_BV / penalty, logits_BV * penalty)
  return jnp.where(seen_BV, penalized_BV, logits_BV)


def sample_logits(logits_BV: jax.Array, key: jax.Array | None, temperature: float,
                  top_k: int = 0, top_p: float = 1.0, vocab_size: int | None = None,
                  exclude_ids: tuple[int, ...] = ()) -> jax.Array:
  """One token per row: greedy when temperature is 0, else softmax(logits / T).

  `key` is one key for the batch or one per row ([B]). `top_k` keeps the k
  most likely tokens, `top_p` the smallest set whose probability reaches p
  (nucleus sampling); both may be combined.
  """
  logits_BV = mask_logits(logits_BV, vocab_size, exclude_ids)
  if temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / temperature
  if top_k:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
    # Keep tokens while the mass before them is < p: the top token always stays.
    keep_BV = (cum_BV - jax.nn.softmax(sorted_BV, axis=-1)) < top_p
    threshold_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
    logits_BV = jnp.where(logits_BV < threshold_B1, -jnp.inf, logits_BV)
  if jnp.ndim(key) == 1:
    return jax.vmap(jax.random.categorical)(key, logits_BV).astype(jnp.int32)
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def mask_logits(logits_BV: jax.Array, vocab_size: int | None,
                exclude_ids: tuple[int, ...] = ()) -> jax.Array:
  """Float32 logits with ids >= `vocab_size` (padding) and `exclude_ids` at -inf."""
  logits_BV = logits_BV.astype(jnp.float32)
  if vocab_size is not None and vocab_size < logits_BV.shape[-1]:
    logits_BV = logits_BV.at[:, vocab_size:].set(-jnp.inf)
  if exclude_ids:
    logits_BV = logits_BV.at[:, jnp.asarray(exclude_ids)].set(-jnp.inf)
  return logits_BV
