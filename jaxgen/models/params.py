"""Parameters that carry logical axis names.

Every parameter is an `nnx.Param` with a `logical_axes` tuple (one name per
dimension, e.g. ('embed', 'mlp')). `jaxgen.parallel.specs` maps those names to
mesh axes through the config's `logical_axis_rules`. We use our own metadata
key rather than Flax's `out_sharding` so that Flax never tries to shard values
eagerly while a model is being built: sharding is decided in one place.

Each parameter also says whether weight decay applies to it (`decay` metadata,
read by the optimizer): by default matrices (kernels, embeddings) decay and
vectors (norm scales, biases) do not; a parameter added to an activation
rather than multiplied with it passes `decay=False` whatever its rank.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]

# Logical axis vocabulary used by the models (documented for config authors).
AXES = ("batch", "length", "vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "layers")


def param(
    rngs: nnx.Rngs,
    init: Initializer,
    shape: Sequence[int],
    axes: Sequence[str | None],
    dtype: jnp.dtype = jnp.float32,
    *,
    decay: bool | None = None,
) -> nnx.Param:
  """Creates a parameter initialised by `init` and tagged with logical `axes` and
  `decay` (None: whether it is a matrix, rank >= 2)."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {tuple(axes)} do not match shape {tuple(shape)}")
  decay = len(shape) >= 2 if decay is None else decay
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(axes),
                   decay=decay)


def num_values(tree) -> int:
  """The number of values in a tree of parameters (arrays or ShapeDtypeStructs)."""
  return sum(x.size for x in jax.tree.leaves(tree))


def decays(variable: nnx.Variable) -> bool | None:
  """Whether weight decay applies to a variable, or None when it does not say."""
  return variable.get_metadata().get("decay")


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
  """The logical axis names of a variable, or None when it has none."""
  return variable.get_metadata().get("logical_axes")
