"""Compiles the real train step for model variants on meshes; one marker line per case.

Run as a child process by tests/test_activation_sharding.py: XLA prints its
"Involuntary full rematerialization" warnings from C++ straight to file
descriptor 2, where no Python capture sees them, so the parent reads the
child's stderr. Before each compile this writes `CASE <name>` to fd 2, so each
warning can be told to the case whose compile printed it.

  python tests/act_sharding_worker.py base@2x2x2 gqa1@1x4x2 ...
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

from jaxgen import config as base
from jaxgen.models.factory import model_config
from jaxgen.parallel import mesh as mesh_lib, specs
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import abstract_train_state
from jaxgen.train.step import jit_train_step

VOCAB = 65


def variant(name: str):
  """configs/shakespeare_char_cpu.py's widths (4 heads x 128, context 64) with 2 of its 4
  layers (every layer partitions alike: 2 show what passes between layers), or a variant
  of it; batch 16 so that every mesh splits it."""
  c = base.base_config()
  c.model = base.transformer_model()
  c.model.update(num_layers=2, num_heads=4, embed_dim=128)
  c.data.seq_len = 64
  c.train.batch_size = 16
  m = c.model
  if name == "rope":
    m.position = "rope"
  elif name == "gqa2":  # 2 key/value heads: divide a tensor axis of 2
    m.update(position="rope", num_kv_heads=2)
  elif name == "gqa1":  # 1 key/value head: never divides the tensor axis
    m.update(num_kv_heads=1)
  elif name == "gqa3":  # 6 query / 3 key/value heads: neither divides tensor=2 (head_dim 32)
    m.update(num_heads=6, num_kv_heads=3, head_dim=32)
  elif name == "scan":
    m.update(scan_layers=True)
  elif name == "scan_remat":
    m.update(scan_layers=True, remat="full", position="rope", num_kv_heads=2)
  elif name == "remat":
    m.update(remat="dots", mlp="swiglu", norm="rmsnorm")
  elif name == "bias":
    m.update(use_bias=True, tie_embeddings=False)
  elif name == "accum":  # two micro-batches of 8 rows
    c.train.grad_accum_steps = 2
  elif name == "bf16":
    m.update(dtype="bfloat16", position="rope", num_kv_heads=2)
  elif name in ("lstm", "lstm_bf16"):
    c.model = base.lstm_model()
    c.model.update(num_layers=2, embed_dim=128, hidden_size=128)
    if name == "lstm_bf16":
      c.model.dtype = "bfloat16"
  elif name in ("encdec", "encdec_scan"):  # 2+2 layers, sources of 48 tokens
    c.model = base.encoder_decoder_model()
    c.model.update(num_layers=2, num_encoder_layers=2, num_heads=4, embed_dim=128,
                   scan_layers=name == "encdec_scan")
    c.data.source_len = 48
  elif name == "lstm_attn":
    c.model = base.lstm_attention_model()
    c.model.update(num_layers=1, num_encoder_layers=1, embed_dim=128, hidden_size=128)
    c.data.source_len = 48
  elif name != "base":
    raise ValueError(f"unknown variant {name}")
  return c


def compile_case(case: str) -> None:
  name, mesh_str = case.split("@")
  cfg = variant(name)
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = map(int, mesh_str.split("x"))
  rules = tuple(tuple(r) for r in cfg.mesh.logical_axis_rules)
  mesh = mesh_lib.make_mesh(cfg.mesh)
  source_len = cfg.data.get("source_len", 0)
  model_cfg = model_config(cfg.model, VOCAB, cfg.data.seq_len, source_len)
  optimizer, schedule = make_optimizer(cfg.train)
  # Compiled for abstract arguments, as `jaxgen plan` does: nothing is initialised or run.
  graphdef, abstract = abstract_train_state(model_cfg, optimizer)
  state_sh = specs.state_shardings(abstract, mesh, rules)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, state_sh)
  batch_sh = specs.batch_sharding(mesh, rules)
  step = _jit(graphdef, optimizer, schedule, cfg.train, state_sh, batch_sh, rules)
  shape = (cfg.train.batch_size, cfg.data.seq_len)
  arrays = {"inputs": (shape, np.int32), "targets": (shape, np.int32)}
  if source_len:  # a paired batch, as jaxgen/data/pairs.py makes them
    source_shape = (cfg.train.batch_size, source_len)
    arrays.update(source=(source_shape, np.int32), source_segment_ids=(source_shape, np.int32),
                  segment_ids=(shape, np.int32), weights=(shape, np.float32))
  batch = {k: jax.ShapeDtypeStruct(*v, sharding=batch_sh) for k, v in arrays.items()}
  os.write(2, f"CASE {case}\n".encode())
  compiled = step.lower(state, batch).compile()
  if os.environ.get("ACT_SHARDING_COLLECTIVES"):  # a diagnostic: what the step communicates
    hlo = compiled.as_text()
    counts = {op: hlo.count(f" {op}(") + hlo.count(f" {op}-start(") for op in _COLLECTIVES}
    print(case, counts, flush=True)


_COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def _jit(graphdef, optimizer, schedule, train_cfg, state_sh, batch_sh, rules):
  """The train step as jaxgen builds it; passes the rules where the step takes them
  (the code before activation constraints did not)."""
  try:
    return jit_train_step(graphdef, optimizer, schedule, train_cfg, state_sh, batch_sh,
                          rules=rules)
  except TypeError:
    return jit_train_step(graphdef, optimizer, schedule, train_cfg, state_sh, batch_sh)


if __name__ == "__main__":
  assert jax.device_count() >= 8, "run with --xla_force_host_platform_device_count=8"
  for case in sys.argv[1:]:
    compile_case(case)
  os.write(2, b"DONE\n")
