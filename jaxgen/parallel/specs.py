"""Shardings from logical axis names.

Parameters carry logical names ('embed', 'mlp', ...); the config's
`mesh.logical_axis_rules` maps each name to mesh axes (jaxgen/parallel/mesh.py).
Optimizer moments inherit the names of the parameters they track, so one function
shards the whole train state.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgen.parallel.mesh import batch_axes


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, Any]]) -> P:
  """PartitionSpec for a value with logical `axes`.

  A dimension is left replicated when no rule names it, when its mesh axes
  are already used by an earlier dimension, or when its size does not divide
  evenly (e.g. 2 key/value heads on a tensor axis of 4).
  """
  return P(*_resolve(axes, shape, dict(mesh.shape), rules)[0])


def indivisible_dims(axes: Sequence[str | None], shape: Sequence[int],
                     mesh_shape: dict[str, int], rules) -> list[tuple[str, int, tuple[str, ...]]]:
  """(logical name, size, mesh axes) of each dimension that the rules would shard
  but that stays replicated because its size does not divide over those axes."""
  return _resolve(axes, shape, mesh_shape, rules)[1]


def _resolve(axes, shape, mesh_shape, rules):
  rule_map = {name: mesh_axes for name, mesh_axes in rules}
  used: set[str] = set()
  spec, indivisible = [], []
  for name, size in zip(axes, shape):
    mesh_axes = rule_map.get(name) if name is not None else None
    if mesh_axes is None:
      spec.append(None)
      continue
    mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    mesh_axes = tuple(a for a in mesh_axes if mesh_shape[a] > 1 and a not in used)
    ways = math.prod(mesh_shape[a] for a in mesh_axes)
    if mesh_axes and size % ways:
      indivisible.append((name, size, mesh_axes))
    if not mesh_axes or size % ways:
      spec.append(None)
      continue
    used.update(mesh_axes)
    spec.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
  return spec, indivisible


def state_shardings(abstract_tree: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a pytree of (abstract) values, nnx Variables included.

  Variables with `logical_axes` metadata follow the rules; every other leaf
  (step counters, RNG keys) is replicated.
  """

  def for_leaf(x):
    if isinstance(x, nnx.Variable):
      axes = x.get_metadata().get("logical_axes")
      value = x.get_value()
      spec = logical_to_spec(axes, value.shape, mesh, rules) if axes else P()
      return x.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, P())

  return jax.tree.map(for_leaf, abstract_tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Batch dimension over the data-parallel axes, sequence replicated."""
  return NamedSharding(mesh, P(batch_axes(rules) or None, None))


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Places this process's rows of the global batch on the mesh.

  Each process reads only its own slice of the data (rows in process
  order), so the global batch is assembled from every host's local rows.
  """
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
