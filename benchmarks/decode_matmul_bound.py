"""How fast batched decoding could be on this machine: a decode step's matmuls alone.

  python benchmarks/decode_matmul_bound.py --config=configs/shakespeare_char.py \
      --config.model.dtype=float32

A decoding step at batch B multiplies B rows by every weight matrix of the
model once (q, k, v, output, MLP, head): 2 x B x (weights) FLOPs, whatever
the cache does. This times exactly those matmuls, chained step after step in
one compiled loop as decoding runs them, with no attention, cache or sampling,
and beside it the real greedy decoding of `jaxgen.sample.decode.generate`, at
each batch size. `bound_ratio` is the largest batch-B / batch-1 tokens/s
ratio any decoder could reach here: B rows at the matmul-only step time,
against the real batch-1 rate. Prints one JSON line; figures are medians of
`--repeats` calls.
"""

from __future__ import annotations

import datetime
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
from jaxgen.models.factory import create_model, model_config
from jaxgen.sample.decode import generate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file.", lock_config=True)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "Batch sizes; the first is the "
                                 "reference of the ratio.")
_STEPS = flags.DEFINE_integer("steps", 255, "Decode steps per call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement (median).")
_VOCAB = flags.DEFINE_integer("vocab_size", 65, "Tokenizer vocabulary size (before padding).")


def matmul_shapes(params) -> list[tuple[int, int]]:
  """[in, out] of every matrix a decode step multiplies a row by: each kernel
  with its first axis as input (attention's output projection takes heads x
  head_dim in), and the tied or untied output head."""
  shapes = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    shape = leaf.shape
    if "scale" in names or "bias" in names or len(shape) < 2:
      continue
    layers = 1
    if "blocks" in names and not any(n.isdigit() for n in names):  # scanned: a layer axis
      layers, shape = shape[0], shape[1:]
      if len(shape) < 2:
        continue
    if names[-1] == "wo" and len(shape) == 3:  # [heads, head_dim, embed]
      mat = (shape[0] * shape[1], shape[2])
    else:  # [embed, heads, head_dim], [in, out], the embedding table [vocab, embed]
      mat = (shape[0], int(np.prod(shape[1:])))
    if "table" in names:  # the tied head multiplies by its transpose
      mat = (mat[1], mat[0])
    if "pos_embed" in names:
      continue
    shapes += [mat] * layers
  return shapes


def main(argv):
  del argv
  host.tune_malloc()
  cfg = _CONFIG.value
  model_cfg = model_config(cfg.model, _VOCAB.value, cfg.data.seq_len)
  graphdef, params = nnx.split(create_model(model_cfg, nnx.Rngs(0)))
  dtype = jnp.dtype(cfg.model.dtype)
  shapes = matmul_shapes(nnx.to_pure_dict(params))
  rng = np.random.default_rng(0)
  weights = [jnp.asarray(rng.standard_normal(s, np.float32) / np.sqrt(s[0]), dtype)
             for s in shapes]
  width = shapes[0][0]
  flops_per_row = 2 * sum(a * b for a, b in shapes)

  @jax.jit
  def matmul_steps(x_BE, weights):
    def step(_, x_BE):
      # Each matrix takes the latest activation of its input width (the MLP's
      # second matrix the first one's output) and leaves its own, through a
      # cheap tanh: every matmul stays on the serial path of the step.
      act = {width: x_BE}
      for w in weights:
        src = act.get(w.shape[0])
        if src is None:
          src = jnp.ones((x_BE.shape[0], w.shape[0]), x_BE.dtype)
        act[w.shape[1]] = jnp.tanh(src @ w)
      return act[width]
    return jax.lax.fori_loop(0, _STEPS.value, step, x_BE)

  def median_s(fn):
    fn()  # compile and warm
    times = []
    for _ in range(_REPEATS.value):
      t0 = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t0)
    return statistics.median(times)

  load_start = round(os.getloadavg()[0], 2)
  rows = {}
  for b in (int(s) for s in _BATCH_SIZES.value):
    x = jnp.asarray(rng.standard_normal((b, width), np.float32), dtype)
    prompt = rng.integers(0, _VOCAB.value, (b, 1), np.int32)
    mm = median_s(lambda: matmul_steps(x, weights).block_until_ready())
    dec = median_s(lambda: generate(graphdef, params, prompt, _STEPS.value, temperature=0.0,
                                    vocab_size=_VOCAB.value))
    rows[b] = {"matmul_ms_per_step": round(mm / _STEPS.value * 1e3, 3),
               "matmul_gflop_per_s": round(flops_per_row * b * _STEPS.value / mm / 1e9, 1),
               "decode_ms_per_step": round(dec / _STEPS.value * 1e3, 3),
               "decode_tokens_per_s": round(b * _STEPS.value / dec, 1),
               "matmul_bound_tokens_per_s": round(b * _STEPS.value / mm, 1)}
  ref = int(_BATCH_SIZES.value[0])
  for b, row in rows.items():
    row["decode_ratio"] = round(row["decode_tokens_per_s"] / rows[ref]["decode_tokens_per_s"], 2)
    row["bound_ratio"] = round(row["matmul_bound_tokens_per_s"]
                               / rows[ref]["decode_tokens_per_s"], 2)
  print(json.dumps({
      "benchmark": "decode_matmul_bound", "date": datetime.datetime.now().isoformat(" ", "minutes"),
      "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      "load_1min": [load_start, round(os.getloadavg()[0], 2)], "jax": jax.__version__,
      "dtype": str(dtype), "matrices_per_step": len(shapes),
      "weight_flops_per_row": flops_per_row, "steps": _STEPS.value, "batches": rows}))


if __name__ == "__main__":
  app.run(main)
