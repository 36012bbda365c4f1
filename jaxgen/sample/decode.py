"""Autoregressive sampling with a key/value cache (Transformer) or carry (LSTM).

Both model families expose `init_cache(batch_size, max_len)` and
`decode(tokens_BT, cache) -> (logits_BTV, cache)`: one call for the prompt
(prefill), then one call per new token inside a single compiled `lax.scan`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def generate(graphdef: nnx.GraphDef, params: nnx.State, prompt_BP: np.ndarray,
             num_tokens: int, *, seed: int = 0, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, vocab_size: int | None = None,
             max_len: int | None = None, exclude_ids: tuple[int, ...] = ()) -> np.ndarray:
  """Samples `num_tokens` tokens after each prompt row; returns them [B, num_tokens].

  `vocab_size` (the tokenizer's, before padding) keeps padded ids from being
  drawn, nor are `exclude_ids` (pad and bos, which never follow a token in
  training). With a context limit `max_len` (Transformers), generation continues
  past it by re-reading the last half context, as nanoGPT crops its
  context; a longer prompt keeps only its last `max_len // 2` tokens.
  """
  prompt_BP = jnp.asarray(prompt_BP, jnp.int32)
  rng = jax.random.key(seed)
  if max_len is None:  # no context limit (LSTM): one compiled loop does it all
    return np.asarray(_generate_segment(graphdef, params, prompt_BP, prompt_BP.shape[1], rng,
                                        num_tokens, temperature, top_k, top_p, vocab_size,
                                        tuple(exclude_ids)))
  # Windowed: each segment re-reads the last `window` tokens (right-padded to
  # a fixed shape, so every segment reuses one compiled program) and
  # generates the rest of the context.
  window = max_len // 2
  per_segment = max_len - window
  context_BP = prompt_BP[:, -window:]
  out = []
  while sum(o.shape[1] for o in out) < num_tokens:
    rng, key = jax.random.split(rng)
    length = context_BP.shape[1]
    padded_BW = jnp.pad(context_BP, ((0, 0), (0, window - length)))
    # Fetched before the next segment is dispatched: with sharded params each
    # segment holds collectives, and a queue of them can abort on host CPUs.
    new_BN = np.asarray(_generate_segment(graphdef, params, padded_BW, length, key, per_segment,
                                          temperature, top_k, top_p, vocab_size,
                                          tuple(exclude_ids)))
    out.append(new_BN)
    context_BP = jnp.concatenate([context_BP, new_BN], axis=1)[:, -window:]
  return np.concatenate(out, axis=1)[:, :num_tokens]


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8, 9, 10))
def _generate_segment(graphdef, params, prompt_BP, length, rng, num_tokens, temperature, top_k,
                      top_p, vocab_size, exclude_ids):
  """Prefills `prompt_BP[:, :length]` (the rest is padding) and samples `num_tokens`."""
  model = nnx.merge(graphdef, params)
  b, p = prompt_BP.shape
  cache = model.init_cache(b, p + num_tokens)
  logits_BPV, cache = model.decode(prompt_BP, cache)
  if isinstance(cache, dict) and "index" in cache:
    # Padding's keys/values sit at slots >= length, which the next steps
    # overwrite before any query can see them.
    cache = {**cache, "index": jnp.asarray(length, jnp.int32)}
  last_BV = jax.lax.dynamic_index_in_dim(logits_BPV, length - 1, axis=1, keepdims=False)

  def step(carry, key):
    logits_BV, cache = carry
    token_B = sample_logits(logits_BV, key, temperature, top_k, top_p, vocab_size, exclude_ids)
    logits_B1V, cache = model.decode(token_B[:, None], cache)
    return (logits_B1V[:, 0], cache), token_B

  keys = jax.random.split(rng, num_tokens)
  _, tokens_NB = jax.lax.scan(step, (last_BV, cache), keys)
  return tokens_NB.T


def sample_logits(logits_BV: jax.Array, key: jax.Array, temperature: float, top_k: int = 0,
                  top_p: float = 1.0, vocab_size: int | None = None,
                  exclude_ids: tuple[int, ...] = ()) -> jax.Array:
  """One token per row: greedy when temperature is 0, else softmax(logits / T).

  `top_k` keeps the k most likely tokens, `top_p` the smallest set whose
  probability reaches p (nucleus sampling); both may be combined.
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
