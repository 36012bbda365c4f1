"""What periodic checkpoints cost training: prints one JSON line.

  python benchmarks/checkpoint_overhead.py --config=configs/shakespeare_char_cpu.py

Runs the recipe's compiled train step on synthetic batches, alternating
rounds without checkpoints and with an asynchronous save every
`--every_steps` steps (the same Checkpointer as `jaxgen train`, state,
iterator position, config and tokenizer), and reports the step times of each,
their ratio, and the time each `save` call blocks the training loop. "slowdown_pct" compares mean step times, saves' stalls
included; "median_slowdown_pct" compares typical steps.
"""

from __future__ import annotations

import json
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jaxgen import host
from jaxgen.train.checkpoint import Checkpointer
from synthetic import train_setup  # benchmarks/ is on the path when run as a script

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file.", lock_config=True)
_EVERY = flags.DEFINE_integer("every_steps", 100, "Steps between saves.")
_STEPS = flags.DEFINE_integer("steps", 600, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of (without, with) checkpoints.")
_VOCAB = flags.DEFINE_integer("vocab_size", 65, "Tokenizer vocabulary size (before padding).")


def main(argv):
  del argv
  cfg = _CONFIG.value
  setup = train_setup(cfg, _VOCAB.value, num_batches=1)
  state, step_fn, batch = setup.state, setup.step_fn, setup.batches[0]
  meta = {"config": json.loads(cfg.to_json_best_effort()),
          "tokenizer": {"kind": "char", "chars": "".join(map(chr, range(32, 32 + _VOCAB.value)))}}
  data_state = json.dumps({"next_index": 0}).encode()
  state, m = step_fn(state, batch)
  jax.block_until_ready(m)

  def timed_round(state, every):
    """Mean and median seconds per step over `--steps` steps, and each save's blocking time."""
    blocking, done_at = [], []
    with tempfile.TemporaryDirectory() as workdir:
      ckpt = Checkpointer(workdir, every_steps=every, keep=3)
      prev = None
      start = time.perf_counter()
      for i in range(1, _STEPS.value + 1):
        state, m = step_fn(state, batch)
        if prev is not None:
          jax.block_until_ready(prev)  # one step in flight, as in training
          done_at.append(time.perf_counter())
        prev = m
        if ckpt.due(i):
          t0 = time.perf_counter()
          ckpt.save(i, state, meta=meta, data_state=data_state)
          blocking.append(time.perf_counter() - t0)
      jax.block_until_ready(prev)
      elapsed = time.perf_counter() - start
      ckpt.close()  # the last save finishes outside the timed window, as at the end of a run
    return state, elapsed / _STEPS.value, float(np.median(np.diff(done_at))), blocking

  without, with_saves, median_without, median_with, blocking = [], [], [], [], []
  for _ in range(_ROUNDS.value):
    state, mean_s, median_s, _ = timed_round(state, 0)
    without.append(mean_s)
    median_without.append(median_s)
    state, mean_s, median_s, b = timed_round(state, _EVERY.value)
    with_saves.append(mean_s)
    median_with.append(median_s)
    blocking += b
  base, ckpt_s = float(np.median(without)), float(np.median(with_saves))
  median_base, median_ckpt = float(np.median(median_without)), float(np.median(median_with))
  print(json.dumps({
      "benchmark": "checkpoint_overhead", "device": jax.devices()[0].device_kind,
      "every_steps": _EVERY.value, "steps_per_round": _STEPS.value, "rounds": _ROUNDS.value,
      "saves": len(blocking),
      "step_ms_without_checkpoints": round(1e3 * base, 2),
      "step_ms_with_checkpoints": round(1e3 * ckpt_s, 2),
      "slowdown_pct": round(100 * (ckpt_s / base - 1), 2),
      # The typical step, as train_throughput.py reports it: saves' spikes excluded.
      "median_step_ms_without_checkpoints": round(1e3 * median_base, 2),
      "median_step_ms_with_checkpoints": round(1e3 * median_ckpt, 2),
      "median_slowdown_pct": round(100 * (median_ckpt / median_base - 1), 2),
      "blocking_ms_per_save_median": round(1e3 * float(np.median(blocking)), 1),
      "blocking_ms_per_save_max": round(1e3 * float(np.max(blocking)), 1),
      "rounds_ms": {"without": [round(1e3 * x, 2) for x in without],
                    "with": [round(1e3 * x, 2) for x in with_saves]}}))


if __name__ == "__main__":
  host.restart_with_malloc_tunables()
  app.run(main)
