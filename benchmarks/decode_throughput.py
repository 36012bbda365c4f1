"""Decoding tokens/s, side by side with Hugging Face transformers' GPT-2; prints one JSON line.

  python benchmarks/decode_throughput.py --config=configs/shakespeare_char.py \
      --config.model.dtype=float32
  python benchmarks/decode_throughput.py --config=configs/shakespeare_char.py \
      --config.model.dtype=float32 --beam_size=4
  python benchmarks/decode_throughput.py --config=configs/lstm_shakespeare_char.py

A randomly initialised model of the config's architecture and dtype (65
character ids, padded as training pads them) continues `--prompt_len`-token
prompts by `--new_tokens` greedy tokens (or beam search with `--beam_size`)
through `jaxgen.sample.decode.generate` / `jaxgen.sample.beam.beam_search`,
the functions `jaxgen sample` and the end-of-training sample call. New tokens
are capped so prompt + new tokens fit a Transformer's context, and `generate`
gets no `max_len`: no windowing, as in the peer.

The peer (`hf_peer.py`, skipped with a reason when torch or transformers is
absent, or the model has no GPT-2 counterpart) is `GPT2LMHeadModel.generate`
with its key/value cache on a model of the same shape, in a child process,
with each of `--threads` torch threads (on a busy 2-core machine 1 thread
can beat 2); `ratio_vs_peer` is against the fastest. Calls alternate between
jaxgen and the peer, so machine noise hits both alike; figures are medians
over `--repeats`, and the load average at the start and end of the run is
reported. Tokens/s counts prompt rows, not beams. Also reported, per batch size:

- compile: seconds in tracing, lowering and XLA compilation during the first
  call, and how many programs were compiled; then how many more compile for
  prompts of `--other_prompt_lens` (0 when one program serves every length);
- flatness: milliseconds per token step for `--short_tokens` and for
  `--new_tokens` new tokens, and what each step after the first
  `--short_tokens` cost; no higher than the first ones when a step's cost
  does not grow with the tokens generated so far.

`--uncached_steps=N` also times N steps of decoding without a cache (a full
forward pass over the whole buffer per token); 0 skips it.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
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
from hf_peer import gpt2_peer  # benchmarks/ is on the path when run as a script

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file.", lock_config=True)
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 256, "Tokens to generate per row (capped so "
                                   "prompt + new tokens fit the model's context).")
_SHORT_TOKENS = flags.DEFINE_integer("short_tokens", 64, "The shorter run of the flatness check.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "Batch sizes to measure.")
_BEAM = flags.DEFINE_integer("beam_size", 0, "Beam search with this many beams; 0: greedy.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per path and batch size (median).")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 1, "Prompt tokens per row.")
_OTHER_LENS = flags.DEFINE_list("other_prompt_lens", ["17", "100"], "Prompt lengths that must "
                                "reuse the compiled program (empty: skip the check).")
_PEER = flags.DEFINE_bool("peer", True, "Time Hugging Face's GPT-2 generate alongside.")
_THREADS = flags.DEFINE_list("threads", ["2", "1"], "torch thread counts to run the peer "
                             "with; the ratio is against the fastest.")
_UNCACHED_STEPS = flags.DEFINE_integer("uncached_steps", 0, "Uncached decoding steps to time; "
                                       "0 skips it.")
_VOCAB = flags.DEFINE_integer("vocab_size", 65, "Tokenizer vocabulary size (before padding).")

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


class CompileLog:
  """Seconds jax spends tracing, lowering and compiling, and programs compiled."""

  def __init__(self):
    self.seconds, self.programs = 0.0, 0
    jax.monitoring.register_event_duration_secs_listener(self._record)

  def _record(self, event, duration, **kwargs):
    del kwargs
    if event in _COMPILE_EVENTS:
      self.seconds += duration
      self.programs += event == _COMPILE_EVENTS[-1]

  def since(self, mark):
    return round(self.seconds - mark[0], 2), self.programs - mark[1]

  def mark(self):
    return self.seconds, self.programs


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return time.perf_counter() - t0, out


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def greedy_uncached(graphdef, params, prompt_BP, num_tokens, vocab_size, steps):
  """The first `steps` of `num_tokens` greedy tokens by full forward passes: [B, steps]."""
  model = nnx.merge(graphdef, params)
  b, p = prompt_BP.shape
  buffer_BT = jnp.zeros((b, p + num_tokens), jnp.int32).at[:, :p].set(prompt_BP)

  def step(i, buffer_BT):
    # Causal attention: padding right of position p+i-1 cannot change its logits.
    logits_BV = jax.lax.dynamic_index_in_dim(model(buffer_BT), p + i - 1, axis=1,
                                             keepdims=False)
    token_B = sample_logits(logits_BV, None, 0.0, vocab_size=vocab_size)
    return jax.lax.dynamic_update_slice_in_dim(buffer_BT, token_B[:, None], p + i, axis=1)

  return jax.lax.fori_loop(0, steps, step, buffer_BT)[:, p:p + steps]


def main(argv):
  del argv
  cfg = _CONFIG.value
  model_cfg = model_config(cfg.model, _VOCAB.value, cfg.data.seq_len)
  graphdef, params = nnx.split(create_model(model_cfg, nnx.Rngs(cfg.train.seed)))
  p, beam = _PROMPT_LEN.value, _BEAM.value
  context = context_limit(model_cfg)
  new_tokens = _NEW_TOKENS.value if context is None else min(_NEW_TOKENS.value, context - p)
  short = min(_SHORT_TOKENS.value, new_tokens)
  if new_tokens < 1:
    raise app.UsageError(f"--prompt_len={p} leaves no room in the model's context of {context}")
  peers, peer_note = {}, "off"
  for threads in (int(t) for t in _THREADS.value if _PEER.value):
    peer, peer_note = gpt2_peer(model_cfg, threads)
    if peer is not None:
      peers[threads] = peer
  log = CompileLog()
  load_start = round(os.getloadavg()[0], 2)
  rng = np.random.default_rng(0)

  def jaxgen_run(prompt_BP, n):
    if beam:
      from jaxgen.sample.beam import beam_search
      return beam_search(graphdef, params, prompt_BP, n, beam_size=beam, vocab_size=_VOCAB.value,
                         max_len=context)[0][:, 0]
    return generate(graphdef, params, prompt_BP, n, temperature=0.0, vocab_size=_VOCAB.value)

  results = {}
  for b in (int(s) for s in _BATCH_SIZES.value):
    prompt_BP = rng.integers(0, _VOCAB.value, (b, p), np.int32)
    mark = log.mark()
    first_s, _ = timed(lambda: jaxgen_run(prompt_BP, new_tokens))
    compile_s, programs = log.since(mark)
    mark = log.mark()
    jaxgen_run(prompt_BP, short)  # warm (compiles here if a new length needs a new program)
    short_compile = log.since(mark)
    other = {}
    for length in (int(s) for s in _OTHER_LENS.value if s):
      if length + short > (context or length + short):
        continue
      mark = log.mark()
      jaxgen_run(rng.integers(0, _VOCAB.value, (b, length), np.int32), short)
      other[length] = log.since(mark)[1]
    for peer in peers.values():
      peer.generate(prompt_BP, 4, beam)  # torch's first call sets things up
    times = {"jaxgen": [], "jaxgen_short": [], **{t: [] for t in peers}}
    for _ in range(_REPEATS.value):
      times["jaxgen"].append(timed(lambda: jaxgen_run(prompt_BP, new_tokens))[0])
      for threads, peer in peers.items():
        times[threads].append(peer.generate(prompt_BP, new_tokens, beam))
      times["jaxgen_short"].append(timed(lambda: jaxgen_run(prompt_BP, short))[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = b * new_tokens / med["jaxgen"]
    row = {
        "jaxgen_tokens_per_s": round(rate, 1),
        "jaxgen_s_per_call": round(med["jaxgen"], 3),
        "compile": {"first_call_s": round(first_s, 2), "compile_s": compile_s,
                    "programs": programs,
                    f"programs_for_{short}_tokens": short_compile[1],
                    "programs_for_other_prompt_lens": other},
        "flatness": {
            f"ms_per_step_{short}": round(med["jaxgen_short"] / short * 1e3, 2),
            f"ms_per_step_{new_tokens}": round(med["jaxgen"] / new_tokens * 1e3, 2),
            # What each step after the first `short` cost: higher than the
            # first steps' average if steps grow with the tokens before them.
            f"ms_per_step_{short}_to_{new_tokens}": round(
                (med["jaxgen"] - med["jaxgen_short"]) / (new_tokens - short) * 1e3, 2)
            if new_tokens > short else None},
    }
    if peers:
      peer_rates = {f"{t}_threads": round(b * new_tokens / med[t], 1) for t in peers}
      row.update(peer_tokens_per_s=peer_rates,
                 ratio_vs_peer=round(rate / max(peer_rates.values()), 2))
    if _UNCACHED_STEPS.value and not beam:
      steps = min(_UNCACHED_STEPS.value, new_tokens)
      fn = greedy_uncached.lower(graphdef, params, jnp.asarray(prompt_BP), new_tokens,
                                 _VOCAB.value, steps).compile()
      uncached_s = statistics.median(
          timed(lambda: np.asarray(fn(params, jnp.asarray(prompt_BP))))[0]
          for _ in range(_REPEATS.value))
      row["uncached_tokens_per_s"] = round(b * steps / uncached_s, 1)
    results[str(b)] = row

  rates = [r["jaxgen_tokens_per_s"] for r in results.values()]
  print(json.dumps({
      "benchmark": "decode_throughput", "mode": f"beam{beam}" if beam else "greedy",
      "model": cfg.model.type, "params": sum(x.size for x in jax.tree.leaves(params)),
      "dtype": cfg.model.dtype, "device": jax.devices()[0].device_kind,
      "cpus": os.cpu_count(), "date": datetime.date.today().isoformat(),
      "versions": f"jax {jax.__version__}, python {platform.python_version()}",
      "peer": next(iter(peers.values())).description if peers else peer_note,
      "context": context, "prompt_len": p, "new_tokens": new_tokens, "repeats": _REPEATS.value,
      "load_average_start_end": [load_start, round(os.getloadavg()[0], 2)],
      "batch_sizes": results,
      "largest_over_smallest_batch": round(rates[-1] / rates[0], 2) if len(rates) > 1 else None,
  }))


if __name__ == "__main__":
  host.restart_with_malloc_tunables()  # as the jaxgen command does
  app.run(main)
