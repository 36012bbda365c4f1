"""Autoregressive sampling with a key/value cache (Transformer) or carry (LSTM).

Every model exposes `init_decoding(batch_size, max_len, source)` (see
`jaxgen.models.interface`; a conditional model encodes its source there, once), `prefill(tokens_BT,
lengths_B, cache)` (a chunk of prompt tokens, each row's own count of them),
`decode(tokens_BT, cache)` and `context_len`. One compiled program runs a whole
segment of generation: the prompts, right-padded into a [B, S] token buffer,
go in through `prefill` in chunks of `_CHUNK` tokens, in a loop that stops after
the longest prompt; then a loop of single-token steps continues each row after
its own prompt. Prompt lengths and the number of new tokens are run-time
values, so one program (per batch size and buffer width) serves every prompt,
and prompts of different lengths share a batch.
"""

from __future__ import annotations

import functools
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


def generate(graphdef: nnx.GraphDef, params: nnx.State,
             prompts: np.ndarray | Sequence[np.ndarray], num_tokens: int, *, seed: int = 0,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             vocab_size: int | None = None, max_len: int | None = None,
             exclude_ids: tuple[int, ...] = (),
             row_ids: Sequence[int] | None = None,
             sources: Sequence[np.ndarray] | None = None,
             source_width: int | None = None) -> np.ndarray:
  """Samples `num_tokens` tokens after each prompt; returns them [B, num_tokens].

  `prompts` is a [B, P] array or B token sequences of any lengths (at least
  one token each). Row b draws from its own random stream, derived from
  `seed` and `row_ids[b]` (default b), so what a row generates does not depend
  on the other rows of the batch. `vocab_size` (the tokenizer's, before
  padding) keeps padded ids from being drawn, nor are `exclude_ids` (pad and
  bos, which never follow a token in training). With a context limit
  `max_len` (Transformers), generation continues past it by re-reading the
  last half context, as nanoGPT crops its context; a longer prompt keeps
  only its last `max_len // 2` tokens. Without `max_len`, a Transformer's
  prompt and new tokens must fit its context.

  A conditional (encoder-decoder) model takes one source token sequence per
  row in `sources`, right-padded to `source_width` (default: the longest);
  a fixed width makes a row's result independent of the others in its batch.
  It does not window: prompt and new tokens must fit its context.
  """
  rows = [np.asarray(r, np.int32).reshape(-1) for r in prompts]
  if not rows or min(len(r) for r in rows) == 0:
    raise ValueError("generate needs at least one prompt, each of at least one token")
  if num_tokens < 1:
    raise ValueError(f"num_tokens={num_tokens} must be at least 1")
  row_ids = np.arange(len(rows)) if row_ids is None else np.asarray(row_ids)
  source = None
  if sources is not None:
    source = _source_buffer(sources, source_width)
    if len(sources) != len(rows):
      raise ValueError(f"{len(sources)} sources for {len(rows)} prompts")
    max_len = None
  run = functools.partial(_run_segment, graphdef, params, seed=seed, row_ids=row_ids,
                          source=source,
                          temperature=temperature, top_k=top_k, top_p=top_p,
                          vocab_size=vocab_size, exclude_ids=tuple(exclude_ids))
  if max_len is None:
    context = nnx.merge(graphdef, params).context_len
    longest = max(len(r) for r in rows)
    if context is not None and longest + num_tokens > context:
      raise ValueError(f"a {longest}-token prompt plus {num_tokens} new tokens exceeds the "
                       f"model's context of {context}; pass max_len to slide a window")
    width = context or max(_MIN_WIDTH, 1 << (longest + num_tokens - 1).bit_length())
    return run(rows, num_tokens, width=width, segment=0)
  # Windowed: each segment re-reads the last `window` tokens of each row and
  # generates the rest of the context.
  window = max_len // 2
  per_segment = max_len - window
  contexts = [r[-window:] for r in rows]
  out, segment = [], 0
  while (done := sum(o.shape[1] for o in out)) < num_tokens:
    # Each segment is fetched before the next is dispatched: with sharded
    # params a segment holds collectives, and a queue of them can abort on
    # host CPUs.
    new_BN = run(contexts, min(per_segment, num_tokens - done), width=max_len,
                 segment=segment)
    out.append(new_BN)
    contexts = [np.concatenate([c, n])[-window:] for c, n in zip(contexts, new_BN)]
    segment += 1
  return np.concatenate(out, axis=1)


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


def _run_segment(graphdef, params, rows, num_tokens, *, width, segment, seed, row_ids,
                 source=None, **sampling):
  """`num_tokens` new tokens after each row, by one call of the compiled program."""
  lengths_B = np.asarray([len(r) for r in rows], np.int32)
  buffer_BS = np.zeros((len(rows), width), np.int32)
  for b, r in enumerate(rows):
    buffer_BS[b, :len(r)] = r
  tokens_SB = np.asarray(_segment(graphdef, params, jnp.asarray(buffer_BS), lengths_B,
                                  np.int32(num_tokens), np.uint32(seed),
                                  row_ids.astype(np.uint32), np.uint32(segment), source,
                                  **sampling))
  return tokens_SB[:num_tokens].T


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("temperature", "top_k", "top_p", "vocab_size",
                                    "exclude_ids"))
def _segment(graphdef, params, buffer_BS, lengths_B, num_tokens, seed, row_ids_B, segment,
             source, *, temperature, top_k, top_p, vocab_size, exclude_ids):
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

  row_keys_B = jax.vmap(lambda r: jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), r), segment))(row_ids_B)

  def sample(logits_BV, i):
    keys_B = None if temperature == 0 else jax.vmap(lambda k: jax.random.fold_in(k, i))(
        row_keys_B)
    return sample_logits(logits_BV, keys_B, temperature, top_k, top_p, vocab_size, exclude_ids)

  def step(i, carry):
    tokens_SB, logits_BV, cache = carry
    token_B = sample(logits_BV, i)
    logits_B1V, cache = model.decode(token_B[:, None], cache)
    return tokens_SB.at[i].set(token_B), logits_B1V[:, 0], cache

  # The last token needs no decode step after it.
  tokens_SB, logits_BV, _ = jax.lax.fori_loop(
      0, num_tokens - 1, step, (jnp.zeros((s, b), jnp.int32), logits_BV, cache))
  last = num_tokens - 1
  return tokens_SB.at[last].set(sample(logits_BV, last))


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
