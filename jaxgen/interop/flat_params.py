"""A model's parameter state <-> a flat dict of numpy arrays named like `blocks.3.attn.wq`.

Scanned models (`model.scan_layers`) stack each block parameter on a leading
layers axis under `blocks.attn.wq`; here they are split into one entry per
layer, so converters see the same names whichever way the model was built.
"""

from __future__ import annotations

import jax
import numpy as np


def flatten(params, scanned: bool) -> dict[str, np.ndarray]:
  """Named host copies of every parameter in `params` (an nnx.State)."""
  out: dict[str, np.ndarray] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = _name(path)
    value = np.asarray(jax.device_get(leaf))
    if scanned and name.startswith("blocks."):
      for i, layer in enumerate(value):
        out[f"blocks.{i}.{name[len('blocks.'):]}"] = layer
    else:
      out[name] = value
  return out


def unflatten(like, flat: dict[str, np.ndarray], scanned: bool):
  """`like`'s structure (an nnx.State of arrays or ShapeDtypeStructs) filled from `flat`.

  Shapes must match exactly; dtypes follow `like`. Every entry of `flat` must
  be used.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  used, values = set(), []
  for path, leaf in leaves:
    name = _name(path)
    if scanned and name.startswith("blocks."):
      rest = name[len("blocks."):]
      names = [f"blocks.{i}.{rest}" for i in range(leaf.shape[0])]
      value = np.stack([flat[n] for n in names])
    else:
      names = [name]
      value = flat[name]
    if tuple(value.shape) != tuple(leaf.shape):
      raise ValueError(f"{name}: shape {value.shape} does not match the model's {leaf.shape}")
    used.update(names)
    values.append(np.asarray(value, dtype=leaf.dtype))
  left = set(flat) - used
  if left:
    raise ValueError(f"parameters the model does not have: {sorted(left)}")
  return jax.tree_util.tree_unflatten(treedef, values)


def _name(path) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  if parts and parts[-1] == "value":
    parts.pop()
  return ".".join(parts)
