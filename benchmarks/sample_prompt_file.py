"""`jaxgen sample --prompt_file` throughput on many prompts of different lengths; one JSON line.

  python benchmarks/sample_prompt_file.py --workdir=/tmp/prompt_file_bench

Trains `--config` (default: the issue's shape, `configs/shakespeare_char.py` in
float32) for one step into `--workdir` unless it already holds a checkpoint,
then samples `--max_new_tokens` after each of `--num_prompts` prompts, the
lines of the bundled tiny Shakespeare corpus (1 to ~60 characters), through
`jaxgen.sample.generate`, the function `jaxgen sample` calls. In the same
process, and the same way (restored parameters, the model's context as the
window), it times 64 prompts of one token: the batch-64 rate the file's rate
should come close to. Both are timed on a second call (the first compiles).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

from jaxgen import host
from jaxgen.data import bundled
from jaxgen.models.factory import context_limit, model_config
from jaxgen.sample import decode
from jaxgen.sample.restore import generate, restore

REPO = pathlib.Path(__file__).resolve().parents[1]
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the checkpoint is (or gets trained).")
_CONFIG = flags.DEFINE_string("config", "configs/shakespeare_char.py", "Recipe to train.")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 1000, "Prompts in the file.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 100, "Tokens per prompt.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature.")


def main(argv):
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  if not (workdir / "checkpoints").is_dir():
    subprocess.run([sys.executable, "-m", "jaxgen", "train", f"--config={_CONFIG.value}",
                    f"--workdir={workdir}", "--config.model.dtype=float32",
                    "--config.train.steps=1", "--config.train.batch_size=8",
                    "--config.eval.every_steps=0", "--config.sample.num_tokens=0"],
                   cwd=REPO, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
  lines = [l for l in bundled.read("tiny_shakespeare").splitlines() if l.strip()]
  prompts = lines[:_NUM_PROMPTS.value]
  n = _MAX_NEW.value

  def file_call():
    return generate(str(workdir), prompts, max_new_tokens=n, temperature=_TEMPERATURE.value)

  graphdef, params, cfg, tokenizer = restore(str(workdir))
  context = context_limit(model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len))

  def batch64_call():
    return decode.generate(graphdef, params, np.full((64, 1), tokenizer.eos_id), n,
                           temperature=_TEMPERATURE.value, vocab_size=tokenizer.vocab_size,
                           max_len=context, exclude_ids=(tokenizer.pad_id, tokenizer.bos_id))

  timings = {}
  for name, fn in (("file", file_call), ("batch64", batch64_call)):
    t0 = time.perf_counter()
    fn()  # compiles
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    timings[name] = (first, time.perf_counter() - t0)
  file_rate = len(prompts) * n / timings["file"][1]
  batch_rate = 64 * n / timings["batch64"][1]
  lengths = [len(p) for p in prompts]
  print(json.dumps({
      "benchmark": "sample_prompt_file", "date": datetime.date.today().isoformat(),
      "device": jax.devices()[0].device_kind, "cpus": os.cpu_count(),
      "versions": f"jax {jax.__version__}", "config": _CONFIG.value, "dtype": cfg.model.dtype,
      "prompts": len(prompts), "prompt_chars_min_median_max":
          [min(lengths), int(np.median(lengths)), max(lengths)],
      "max_new_tokens": n, "temperature": _TEMPERATURE.value,
      "file_tokens_per_s": round(file_rate, 1),
      "file_s": round(timings["file"][1], 2), "file_first_call_s": round(timings["file"][0], 2),
      "batch64_tokens_per_s": round(batch_rate, 1),
      "file_over_batch64": round(file_rate / batch_rate, 3),
      "load_average": round(os.getloadavg()[0], 2),
  }))


if __name__ == "__main__":
  host.restart_with_malloc_tunables()
  app.run(main)
