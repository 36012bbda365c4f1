"""The train state: a plain pytree created directly in its sharded layout."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxgen.models import registry
from jaxgen.models.factory import ModelConfig, create_model
from jaxgen.models.params import num_values
from jaxgen.parallel import specs


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # uint32 key data; dropout keys are fold_in(rng, step)


def create_train_state(model_cfg: ModelConfig, optimizer: optax.GradientTransformation,
                       seed: int, mesh: Mesh, rules) -> tuple[nnx.GraphDef, TrainState, Any]:
  """Returns (graphdef, state, state shardings), the state built already sharded.

  The abstract state comes from `eval_shape`, shardings from its logical
  axis names, and `jit(init, out_shardings=...)` then materialises each
  shard on its own device: nothing is built whole on one device first.
  """

  init = _init_fn(model_cfg, optimizer, seed)
  graphdef, abstract = abstract_train_state(model_cfg, optimizer, seed)
  shardings = specs.state_shardings(abstract, mesh, rules)
  state = jax.jit(init, out_shardings=shardings)()
  return graphdef, state, shardings


def abstract_train_state(model_cfg: ModelConfig, optimizer: optax.GradientTransformation,
                         seed: int = 0) -> tuple[nnx.GraphDef, TrainState]:
  """(graphdef, state of ShapeDtypeStructs): the layout, with nothing computed."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: create_model(model_cfg, nnx.Rngs(params=seed))))
  return graphdef, jax.eval_shape(_init_fn(model_cfg, optimizer, seed))


def _init_fn(model_cfg, optimizer, seed):
  def init() -> TrainState:
    model = create_model(model_cfg, nnx.Rngs(params=seed))
    params = nnx.state(model, nnx.Param)
    rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=rng)
  return init


def count_params(params: nnx.State) -> int:
  return num_values(params)


def model_flops_per_token(model_cfg: ModelConfig, params: nnx.State, seq_len: int,
                          source_len: int = 0) -> float:
  """Training FLOPs per (target) token (6N + attention), the numerator of MFU, as the
  model's family counts them; `source_len` is a conditional model's (0: `seq_len`)."""
  return registry.of_config(model_cfg).flops_per_token(model_cfg, params, seq_len,
                                                       source_len or seq_len)
