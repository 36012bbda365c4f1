"""Greedy decoding throughput with and without the key/value cache; prints one JSON line.

  python benchmarks/decode_throughput.py --config=configs/shakespeare_char.py
  python benchmarks/decode_throughput.py --config=configs/shakespeare_char.py \
      --batch_sizes=1,64 --new_tokens=256 --repeats=3

Both paths are single compiled loops on a randomly initialised model (the
config's architecture and dtype; 65 character ids padded as training pads
them); compilation is excluded (a warm-up call, or ahead-of-time compile):

- cached: `jaxgen.sample.decode.generate(temperature=0)`, the sampler users
  get: one prefill, then one single-token step per new token;
- uncached: one `lax.fori_loop` that, for every new token, runs the whole
  causal forward pass `model(tokens)` over a fixed right-padded buffer of
  prompt + new tokens and reads the logits at the current position.

Tokens/s is batch * tokens / median seconds per call over `--repeats`. Every
uncached step does identical work (the whole buffer), so by default only
the first `--uncached_steps` of its loop are timed: on 2 CPU cores one
batch-64 step of the 6-layer recipe takes ~12 s, all 255 almost an hour.
`--uncached_steps=0` times the whole loop.
New tokens are capped so prompt + new tokens fit the model's context (a
Transformer with context 256 gets 255 after a 1-token prompt) and `generate`
runs without its window (max_len=None): past the context it would slide a
half-context window and re-prefill every 128 tokens, and the uncached path
would need a sliding buffer, so the comparison would mix in windowing
policy. Within the context both compute the same greedy tokens (up to rounding in
low precision; the JSON reports how many agree).
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from jaxgen import host
from jaxgen.models.factory import context_limit, create_model, model_config
from jaxgen.sample.decode import generate, sample_logits

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file.", lock_config=True)
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 256, "Tokens to generate per row (capped so "
                                   "prompt + new tokens fit the model's context).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "Batch sizes to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per path and batch size (median).")
_UNCACHED_STEPS = flags.DEFINE_integer("uncached_steps", 8, "Uncached loop steps to time (each "
                                       "costs the same); 0: all new tokens.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 1, "Prompt tokens per row.")
_VOCAB = flags.DEFINE_integer("vocab_size", 65, "Tokenizer vocabulary size (before padding).")


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def greedy_uncached(graphdef, params, prompt_BP, num_tokens, vocab_size, steps):
  """The first `steps` of `num_tokens` greedy tokens, without a cache: [B, steps].

  Each token costs a full forward pass over the whole right-padded buffer
  of prompt + `num_tokens`, the same work at every step.
  """
  model = nnx.merge(graphdef, params)
  b, p = prompt_BP.shape
  buffer_BT = jnp.zeros((b, p + num_tokens), jnp.int32).at[:, :p].set(prompt_BP)

  def step(i, buffer_BT):
    # Causal attention: the zero padding right of position p+i-1 cannot
    # change its logits, so one buffer shape (one program) serves every step.
    logits_BTV = model(buffer_BT)
    logits_BV = jax.lax.dynamic_index_in_dim(logits_BTV, p + i - 1, axis=1, keepdims=False)
    token_B = sample_logits(logits_BV, None, 0.0, vocab_size=vocab_size)
    return jax.lax.dynamic_update_slice_in_dim(buffer_BT, token_B[:, None], p + i, axis=1)

  return jax.lax.fori_loop(0, steps, step, buffer_BT)[:, p:p + steps]


def time_calls(fn, repeats):
  """Median seconds of `repeats` calls, and the last call's output."""
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def main(argv):
  del argv
  cfg = _CONFIG.value
  model_cfg = model_config(cfg.model, _VOCAB.value, cfg.data.seq_len)
  graphdef, params = nnx.split(create_model(model_cfg, nnx.Rngs(cfg.train.seed)))
  p = _PROMPT_LEN.value
  context = context_limit(model_cfg)
  new_tokens = _NEW_TOKENS.value if context is None else min(_NEW_TOKENS.value, context - p)
  if new_tokens < 1:
    raise app.UsageError(f"--prompt_len={p} leaves no room in the model's context of {context}")
  rng = np.random.default_rng(0)

  steps = min(_UNCACHED_STEPS.value or new_tokens, new_tokens)
  results = {}
  for b in (int(s) for s in _BATCH_SIZES.value):
    prompt_BP = rng.integers(0, _VOCAB.value, (b, p), np.int32)
    # max_len=None: everything fits the context, so generate needs no window.
    cached = lambda: generate(graphdef, params, prompt_BP, new_tokens, temperature=0.0,
                              vocab_size=_VOCAB.value)
    t0 = time.perf_counter()
    cached()  # compiles; generate's jitted loop is reused by later calls
    cached_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    uncached = greedy_uncached.lower(graphdef, params, jnp.asarray(prompt_BP), new_tokens,
                                     _VOCAB.value, steps).compile()
    uncached_compile_s = time.perf_counter() - t0
    cached_s, cached_tokens = time_calls(cached, _REPEATS.value)
    uncached_s, uncached_tokens = time_calls(lambda: uncached(params, jnp.asarray(prompt_BP)),
                                             _REPEATS.value)
    cached_rate, uncached_rate = b * new_tokens / cached_s, b * steps / uncached_s
    results[str(b)] = {
        "cached_tokens_per_s": round(cached_rate, 1),
        "uncached_tokens_per_s": round(uncached_rate, 1),
        "speedup": round(cached_rate / uncached_rate, 2),
        "cached_s_per_call": round(cached_s, 4), "uncached_s_per_call": round(uncached_s, 4),
        # Same greedy rule on both paths; low-precision rounding differs
        # between one-token steps and full passes, which can flip near-ties.
        "tokens_agree": round(float(np.mean(cached_tokens[:, :steps] ==
                                            np.asarray(uncached_tokens))), 3),
        "untimed_warmup_s": {"cached_compile_and_first_call": round(cached_compile_s, 2),
                             "uncached_compile": round(uncached_compile_s, 2)},
    }

  print(json.dumps({
      "benchmark": "decode_throughput", "model": cfg.model.type,
      "params": sum(x.size for x in jax.tree.leaves(params)),
      "dtype": cfg.model.dtype, "device": jax.devices()[0].device_kind,
      "context": context, "prompt_len": p, "requested_new_tokens": _NEW_TOKENS.value,
      "new_tokens": new_tokens,
      "new_tokens_note": ("capped so prompt + new tokens fit the context: no windowing in "
                          "either path" if new_tokens < _NEW_TOKENS.value else "as requested"),
      "uncached_timed_steps": steps,
      "repeats": _REPEATS.value, "batch_sizes": results,
  }))


if __name__ == "__main__":
  host.restart_with_malloc_tunables()  # as the jaxgen command does
  app.run(main)
