"""Parameters that carry logical axis names.

Every parameter is an `nnx.Param` with a `logical_axes` tuple (one name per
dimension, e.g. ('embed', 'mlp')). `jaxgen.parallel.specs` maps those names to
mesh axes through the config's `logical_axis_rules`. We use our own metadata
key rather than Flax's `out_sharding` so that Flax never tries to shard values
eagerly while a model is being built: sharding is decided in one place.
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
) -> nnx.Param:
  """Creates a parameter initialised by `init` and tagged with logical `axes`."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {tuple(axes)} do not match shape {tuple(shape)}")
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(axes))


def num_values(tree) -> int:
  """The number of values in a tree of parameters (arrays or ShapeDtypeStructs)."""
  return sum(x.size for x in jax.tree.leaves(tree))


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
  """The logical axis names of a variable, or None when it has none."""
  return variable.get_metadata().get("logical_axes")
