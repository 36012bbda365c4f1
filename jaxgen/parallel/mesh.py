"""The device mesh: its axes, its shape over the devices there are, and the grid of
devices it is laid over (within and across hosts).

The bottom of jaxgen's parallelism layer (jaxgen/parallel/): it imports nothing
from jaxgen but jaxgen.errors, so the models, the train step, `jaxgen plan` and the
config checks all build on it without depending on each other. JAX is imported only
by the functions that build a mesh: the config checks (mesh_shape, dcn_problems,
data_parallel_size) run before JAX is set up.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from jaxgen.errors import UserError

if TYPE_CHECKING:
  import jax
  from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "tensor")  # the default mesh.axes


def mesh_axes(mesh_cfg: Any) -> tuple[str, ...]:
  """The mesh's axis names, outermost first (mesh.axes; configs saved before that key
  have data, fsdp, tensor). Each axis has its size in mesh.<axis>: another axis (an
  'expert' axis, say) is a config change."""
  return tuple(mesh_cfg.get("axes", MESH_AXES))


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh over mesh.axes (data x fsdp x tensor by default); a size of -1 takes the
  devices left over.

  `mesh.dcn_data` / `mesh.dcn_fsdp` ways of those axes cross hosts (TPU
  slices, or processes elsewhere), the rest stay within one; by default the
  devices simply go in JAX's order, process by process.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from jax.sharding import Mesh  # pylint: disable=import-outside-toplevel,redefined-outer-name
  devices = list(devices if devices is not None else jax.devices())
  # Auto axis types: sharding is propagated by XLA from the annotations we give.
  axes = mesh_axes(mesh_cfg)
  return Mesh(device_grid(mesh_cfg, devices), axes,
              axis_types=(jax.sharding.AxisType.Auto,) * len(axes))


def device_grid(mesh_cfg, devices: Sequence[Any]) -> np.ndarray:
  """The devices arranged over the mesh's axes, as `make_mesh` uses them."""
  shape = mesh_shape(mesh_cfg, len(devices))
  dcn = {a: mesh_cfg.get(f"dcn_{a}", 1) for a in shape}
  if math.prod(dcn.values()) > 1:
    return _hybrid_grid(shape, dcn, devices)
  return np.asarray(devices).reshape(list(shape.values()))


def _hybrid_grid(shape: dict[str, int], dcn: dict[str, int], devices) -> np.ndarray:
  from jax.experimental import mesh_utils
  problems = dcn_problems({f"dcn_{a}": dcn[a] for a in dcn}, shape)
  if problems:
    raise UserError(problems[0])
  slices = {getattr(d, "slice_index", None) for d in devices}
  hosts = {d.process_index for d in devices}
  granules = math.prod(dcn.values())
  by_slice = None not in slices and len(slices) == granules
  if not by_slice and len(hosts) != granules:
    raise UserError(f"mesh.dcn_data * mesh.dcn_fsdp = {granules} must equal the number of "
                    f"hosts ({len(hosts)} processes"
                    f"{f', {len(slices)} TPU slices' if None not in slices else ''}); set "
                    "them so, or leave both at 1")
  ici = [shape[a] // dcn[a] for a in shape]
  return mesh_utils.create_hybrid_device_mesh(ici, [dcn[a] for a in shape], devices,
                                              process_is_granule=not by_slice)


def mesh_shape(mesh_cfg: Any, num_devices: int) -> dict[str, int]:
  """{axis: size} in mesh.axes' order over `num_devices`; a size of -1 takes the
  devices left over. Raises UserError when the sizes cannot fill the devices."""
  axes = mesh_axes(mesh_cfg)
  sizes = [int(mesh_cfg[a]) for a in axes]
  n = num_devices
  spec = " x ".join(f"{a}={s}" for a, s in zip(axes, sizes))
  keys = [f"mesh.{a}" for a in axes]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh sizes {spec} are invalid: use positive sizes and at most one -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % known:
      raise UserError(f"mesh {spec} cannot fill {n} devices: {n} is not a multiple of {known}; "
                      f"change {'/'.join(keys)}")
    sizes[sizes.index(-1)] = n // known
  if math.prod(sizes) != n:
    raise UserError(f"mesh {spec} has {math.prod(sizes)} devices but {n} are available; "
                    f"make {' * '.join(keys)} equal the device count "
                    "(or set one of them to -1)")
  return dict(zip(axes, sizes))


def dcn_problems(mesh_cfg: Any, shape: dict[str, int]) -> list[str]:
  """The across-host sizes (mesh.dcn_data, mesh.dcn_fsdp) against the mesh `shape`."""
  return [f"mesh.dcn_{axis}={mesh_cfg.get(f'dcn_{axis}', 1)} does not divide mesh.{axis}="
          f"{shape[axis]}; the across-host ways must divide the axis"
          for axis in shape if shape[axis] % mesh_cfg.get(f"dcn_{axis}", 1)]


def batch_axes(rules: Any) -> tuple[str, ...]:
  """The mesh axes the batch dimension is split over: the 'batch' rule, by default
  data and fsdp."""
  axes = dict(rules).get("batch", ("data", "fsdp"))
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


def data_parallel_size(shape: dict[str, int], rules: Any) -> int:
  """How many ways a mesh of `shape` splits the batch."""
  return math.prod(shape[a] for a in batch_axes(rules))
