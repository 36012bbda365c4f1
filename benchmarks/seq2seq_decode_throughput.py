"""Encoder-decoder decoding tokens/s, with and without the cross-attention cache;
prints one JSON line.

  python benchmarks/seq2seq_decode_throughput.py --config=configs/seq2seq_reverse.py
  python benchmarks/seq2seq_decode_throughput.py --config=configs/seq2seq_reverse.py \
      --source_len=128 --new_tokens=128 --config.model.num_layers=6

A randomly initialised model of the config's architecture (`--vocab` ids)
decodes `--new_tokens` greedy tokens from `--source_len`-token sources at
batch 1 and 64 through `jaxgen.sample.decode.generate` (what `jaxgen sample
--source` and the evaluation call), twice: with the cross-attention
keys/values computed once per source and kept in the cache (what jaxgen
does), and with only the encoder output kept and every layer's keys/values
projected again at each step (`cache_cross_kv=False`). Tokens/s counts
generated tokens of all rows, encoding included; medians over `--repeats`
calls after a compiling one, the two variants alternating.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from jaxgen.models.factory import create_model, model_config
from jaxgen.sample.decode import generate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file.", lock_config=True)
_SOURCE_LEN = flags.DEFINE_integer("source_len", 0, "Source tokens (0: data.source_len).")
_NEW = flags.DEFINE_integer("new_tokens", 0, "Tokens generated (0: the decoder context - 1).")
_VOCAB = flags.DEFINE_integer("vocab", 64, "Tokenizer vocabulary size.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per variant and batch size.")


def main(argv):
  del argv
  cfg = _CONFIG.value
  source_len = _SOURCE_LEN.value or cfg.data.source_len or cfg.data.seq_len
  new = _NEW.value or cfg.data.seq_len - 1
  seq_len = max(cfg.data.seq_len, new + 1)
  cfg.model.max_len = max(cfg.model.max_len, seq_len)
  cfg.model.max_source_len = max(cfg.model.max_source_len, source_len)
  model_cfg = model_config(cfg.model, _VOCAB.value, seq_len, source_len)
  variants = {}
  for cached in (True, False):
    mc = dataclasses.replace(model_cfg, cache_cross_kv=cached)
    variants[cached] = nnx.split(create_model(mc, nnx.Rngs(cfg.train.seed)))
  rng = np.random.default_rng(0)
  result = {"benchmark": "seq2seq_decode_throughput", "config": config_flags.get_config_filename(flags.FLAGS["config"]),
            "source_len": source_len, "new_tokens": new, "layers": model_cfg.decoder.num_layers,
            "encoder_layers": model_cfg.num_encoder_layers,
            "width": model_cfg.decoder.embed_dim, "dtype": jax.numpy.dtype(
                model_cfg.decoder.dtype).name,
            "device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "machine": platform.node()}
  for batch in (1, 64):
    sources = [rng.integers(3, _VOCAB.value, source_len - 1) for _ in range(batch)]
    prompts = [np.asarray([1], np.int32)] * batch

    def call(cached):
      graphdef, params = variants[cached]
      start = time.perf_counter()
      generate(graphdef, params, prompts, new, temperature=0, vocab_size=_VOCAB.value,
               sources=sources, source_width=source_len)  # returns host arrays: done
      return time.perf_counter() - start

    compile_s = {c: call(c) for c in (True, False)}
    times = {True: [], False: []}
    for _ in range(_REPEATS.value):
      for c in (True, False):
        times[c].append(call(c))
    for c, name in ((True, "cross_cache"), (False, "no_cross_cache")):
      t = statistics.median(times[c])
      result[f"batch{batch}_{name}_tokens_per_s"] = round(batch * new / t, 1)
      result[f"batch{batch}_{name}_first_call_s"] = round(compile_s[c], 2)
    result[f"batch{batch}_speedup"] = round(statistics.median(times[False]) /
                                            statistics.median(times[True]), 3)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
