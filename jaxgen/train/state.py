"""The train state: a plain pytree created directly in its sharded layout."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxgen import metrics
from jaxgen.models.factory import ModelConfig, create_model
from jaxgen.models.transformer import TransformerConfig
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
  return sum(x.size for x in jax.tree.leaves(params))


def model_flops_per_token(model_cfg: ModelConfig, params: nnx.State, seq_len: int) -> float:
  """Training FLOPs per token (6N + attention), the numerator of MFU."""
  n_params = count_params(params)
  if isinstance(model_cfg, TransformerConfig):
    # Lookup tables do no matmul (nanoGPT leaves them out too): the position
    # table, and the token table unless it is also the output head.
    lookups = [params["pos_embed"]] if "pos_embed" in params else []
    if not model_cfg.tie_embeddings:
      lookups.append(params["embed"]["table"])
    # get_value().size: params may be abstract (ShapeDtypeStructs) when planning.
    n = n_params - sum(v.get_value().size for v in lookups)
    return metrics.flops_per_token(n, model_cfg.num_layers, model_cfg.num_heads,
                                   model_cfg.head_size, seq_len)
  return metrics.flops_per_token(n_params, 0, 0, 0, seq_len)
