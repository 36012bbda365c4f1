"""Logical sharding constraints on activations, active only inside `use(mesh, rules)`.

Parameters and the batch come into the train step sharded; everything in
between is left to XLA's sharding propagation, which guesses badly around
reshapes (q/k/v split into heads, [B, T, D] -> [B*T, D] token matrices) and
then falls back to gathering a whole tensor and re-slicing it ("Involuntary
full rematerialization"). Naming the activations' dimensions with the same
logical names as the parameters ('batch', 'length', 'embed', 'heads', ...)
and the same `mesh.logical_axis_rules` pins them where they belong, as
MaxText's `nn.with_logical_constraint` and Flax's `nn.logical_axis_rules` do.

The mesh and rules are set around tracing by the train step (`use`); the
models call `constrain`, which is the identity when no `use` is active: on one
device, in the samplers and decoders, and in tests that call a model directly.
Specs come from `specs.logical_to_spec`, so a dimension that does not
divide its mesh axes stays replicated, exactly as for parameters.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgen.parallel.specs import logical_to_spec

# (mesh, rules) while tracing a step that shards its activations, else None.
# A context variable, not a global: tracing in another thread sees its own.
_ACTIVE: contextvars.ContextVar[tuple[Mesh, tuple] | None] = contextvars.ContextVar(
    "jaxgen_activation_sharding", default=None)


@contextlib.contextmanager
def use(mesh: Mesh | None, rules: Sequence[tuple[str, Any]]) -> Iterator[None]:
  """Within this block (while a function is traced), `constrain` shards activations
  over `mesh` by `rules`. A mesh of one device needs no constraints: a no-op."""
  active = (mesh, tuple(tuple(r) for r in rules)) if mesh is not None and mesh.size > 1 else None
  token = _ACTIVE.set(active)
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """`x` constrained to the layout its logical `axes` map to; `x` itself when inactive."""
  spec = spec_for(axes, x.shape)
  if spec is None:
    return x
  mesh = _ACTIVE.get()[0]
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def spec_for(axes: Sequence[str | None], shape: Sequence[int]) -> P | None:
  """The PartitionSpec `constrain` would apply, or None when inactive: lets a layer
  pick a layout that shards (e.g. repeat key/value heads that cannot be split)."""
  active = _ACTIVE.get()
  if active is None:
    return None
  if len(axes) != len(shape):
    raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
  mesh, rules = active
  return logical_to_spec(axes, shape, mesh, rules)
