"""The recipe's compiled train step on synthetic token batches, shared by the benchmarks.

No data set is read, so the timings are the model's and the step's alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxgen.models.factory import ModelConfig, model_config
from jaxgen.parallel import mesh as mesh_lib, specs
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import create_train_state
from jaxgen.train.step import jit_train_step


@dataclasses.dataclass
class TrainSetup:
  model_cfg: ModelConfig
  mesh: object
  state: object
  step_fn: object  # jitted (state, batch) -> (state, metrics), state donated
  batches: list  # on the mesh, ready to feed


def train_setup(cfg, vocab_size: int, num_batches: int = 4) -> TrainSetup:
  """The state and jitted step exactly as `jaxgen train` builds them, and random batches."""
  t = cfg.train
  rules = tuple(tuple(r) for r in cfg.mesh.logical_axis_rules)
  mesh = mesh_lib.make_mesh(cfg.mesh)
  model_cfg = model_config(cfg.model, vocab_size, cfg.data.seq_len)
  optimizer, schedule = make_optimizer(t)
  graphdef, state, state_sh = create_train_state(model_cfg, optimizer, t.seed, mesh, rules)
  batch_sh = specs.batch_sharding(mesh, rules)
  step_fn = jit_train_step(graphdef, optimizer, schedule, t, state_sh, batch_sh, rules=rules)
  rng = np.random.default_rng(0)
  shape = (t.batch_size, cfg.data.seq_len)
  batches = [specs.put_batch({"inputs": rng.integers(0, vocab_size, shape, np.int32),
                                 "targets": rng.integers(0, vocab_size, shape, np.int32)},
                                batch_sh) for _ in range(num_batches)]
  return TrainSetup(model_cfg, mesh, state, step_fn, batches)
