"""Sampling inside the context (the cache) and past it (a prefill a token); one JSON line.

  python benchmarks/sample_past_context.py [--config=configs/shakespeare_char_cpu.py]

Builds the recipe's model at random (65 symbols, as tiny Shakespeare's char
vocabulary), then times `jaxgen.sample.decode.generate` at temperature 0.8 for
`--batch` rows after a 7-token prompt: `context - 7 + 1` tokens, all from the
cache, and `--past` tokens, of which all but those first ones are each
predicted from the last `context` tokens by a fresh prefill (nanoGPT's rule),
then the same with `window_stride=--stride` (the last context - stride + 1
tokens re-read every `--stride` tokens, from the cache in between). Each is
timed on a second call (the first compiles); the ratios of their tokens/s
are the price of exact sampling past the context, and what the stride buys.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx

from jaxgen import host
from jaxgen.models.factory import context_limit, create_model, model_config
from jaxgen.sample import decode

_CONFIG = flags.DEFINE_string("config", "configs/shakespeare_char_cpu.py", "Recipe whose model.")
_BATCH = flags.DEFINE_integer("batch", 4, "Rows (samples) per call.")
_PAST = flags.DEFINE_integer("past", 500, "Tokens generated in the run that passes the context.")
_STRIDE = flags.DEFINE_integer("stride", 16, "The window_stride of the third run.")
_VOCAB = 65


def main(argv):
  del argv
  spec = importlib.util.spec_from_file_location("recipe", _CONFIG.value)
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  cfg = recipe.get_config()
  model_cfg = model_config(cfg.model, _VOCAB, cfg.data.seq_len)
  graphdef, params = nnx.split(create_model(model_cfg, nnx.Rngs(0)))
  context = context_limit(model_cfg)
  prompt = np.arange(1, 8, dtype=np.int32)
  rows = [prompt] * _BATCH.value

  def run(n, stride=1):
    return decode.generate(graphdef, params, rows, n, temperature=0.8, vocab_size=_VOCAB,
                           max_len=context, window_stride=stride)

  inside = context - len(prompt) + 1
  rates = {}
  for name, n, stride in (("inside", inside, 1), ("past", _PAST.value, 1),
                          ("strided", _PAST.value, _STRIDE.value)):
    run(n, stride)  # compiles
    t0 = time.perf_counter()
    run(n, stride)
    rates[name] = n * _BATCH.value / (time.perf_counter() - t0)
  print(json.dumps({
      "benchmark": "sample_past_context", "date": datetime.date.today().isoformat(),
      "device": jax.devices()[0].device_kind, "cpu": _cpu_model(),
      "cpus": os.cpu_count(), "versions": f"jax {jax.__version__}", "config": _CONFIG.value,
      "context": context, "batch": _BATCH.value,
      "inside_tokens": inside, "inside_tokens_per_s": round(rates["inside"], 1),
      "past_tokens": _PAST.value, "past_tokens_per_s": round(rates["past"], 1),
      "past_over_inside": round(rates["past"] / rates["inside"], 3),
      "stride": _STRIDE.value, "strided_tokens_per_s": round(rates["strided"], 1),
      "strided_over_past": round(rates["strided"] / rates["past"], 2),
      "load_average": round(os.getloadavg()[0], 2),
  }))


def _cpu_model() -> str:
  """lscpu's model name (CPU figures differ a lot between processors)."""
  try:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


if __name__ == "__main__":
  host.restart_with_malloc_tunables()
  app.run(main)
