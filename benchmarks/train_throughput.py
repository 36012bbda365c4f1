"""Train-step throughput for a recipe: prints one JSON line.

  python benchmarks/train_throughput.py --config=configs/shakespeare_char_cpu.py
  python benchmarks/train_throughput.py --config=configs/gpt2_124m.py --steps=50

Runs the same jitted train step as `jaxgen train` on synthetic token batches
(no data set needed), after `--warmup` steps, and reports the median step
time over `--steps`, tokens/s, compile time and MFU (when the chip's peak is
known). Steps are dispatched one ahead, as in training.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jaxgen import host
from jaxgen import metrics as metrics_lib
from jaxgen.train.state import count_params, model_flops_per_token
from synthetic import train_setup  # benchmarks/ is on the path when run as a script

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 100, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after compilation.")
_VOCAB = flags.DEFINE_integer("vocab_size", 65, "Tokenizer vocabulary size (before padding).")


def main(argv):
  del argv
  cfg = _CONFIG.value
  t = cfg.train
  setup = train_setup(cfg, _VOCAB.value)
  model_cfg, state, step_fn, batches = setup.model_cfg, setup.state, setup.step_fn, setup.batches

  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  for i in range(_WARMUP.value):
    state, m = compiled(state, batches[i % 4])
    jax.block_until_ready(m)  # one at a time: a queue of sharded steps can abort on CPU

  # Dispatch step i, then wait for step i-1 (one step queued, as in training);
  # the interval between consecutive completions is the steady-state step time.
  done_at, prev = [], m
  start = time.perf_counter()
  for i in range(_STEPS.value):
    state, m = compiled(state, batches[i % 4])
    jax.block_until_ready(prev)
    done_at.append(time.perf_counter())
    prev = m
  jax.block_until_ready(prev)
  done_at.append(time.perf_counter())
  wall_s = done_at[-1] - start
  step_s = float(np.median(np.diff(done_at)))
  tokens = t.batch_size * cfg.data.seq_len
  n_params = count_params(state.params)
  fpt = model_flops_per_token(model_cfg, state.params, cfg.data.seq_len,
                              cfg.data.get("source_len", 0))
  peak = metrics_lib.peak_flops(jax.devices()[0])
  result = {
      "benchmark": "train_throughput", "config": cfg.model.type, "params": n_params,
      "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "mesh": dict(setup.mesh.shape), "batch_size": t.batch_size, "seq_len": cfg.data.seq_len,
      "dtype": cfg.model.dtype, "steps": _STEPS.value,
      "step_ms": round(step_s * 1e3, 3), "tokens_per_s": round(tokens / step_s, 1),
      "wall_ms_per_step": round(wall_s / _STEPS.value * 1e3, 3),
      "compile_s": round(compile_s, 2), "flops_per_token": fpt,
      "mfu": round(tokens / step_s * fpt / peak, 4) if peak else None,
  }
  print(json.dumps(result))


if __name__ == "__main__":
  host.restart_with_malloc_tunables()  # as the jaxgen command does
  app.run(main)
