"""`jaxgen plan`: what a run needs, found by compiling its train step without running it.

The train state is built abstractly (shapes and dtypes only), laid out by the
same logical-axis rules as training, and the same jitted train step is lowered
with abstract inputs and compiled for the planned devices; nothing the size of
the model is ever allocated. Planning for N devices without them: `jaxgen plan
--devices=N` compiles for N host CPU devices (cli/plan.py sets that up before JAX
starts).

Per-device bytes of parameters and optimizer state come from the shardings:
each leaf's shard shape times its item size. Temporaries come from the
compiler's memory analysis of the compiled step. When the step is compiled for
CPU devices standing in for accelerators, that figure is XLA:CPU's: the GPU
and TPU compilers fuse differently, and cuDNN's fused attention keeps no
T x T score matrix, so it is an estimate there, not a measurement.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxgen import chips, config_check
from jaxgen.models import registry
from jaxgen.models.factory import model_config
from jaxgen.parallel import mesh as mesh_lib, specs
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import abstract_train_state, count_params, model_flops_per_token
from jaxgen.train.step import jit_train_step

DEFAULT_MFU = 0.4
# JAX on GPU preallocates this share of memory and allocates from it alone
# (XLA_PYTHON_CLIENT_MEM_FRACTION, JAX's "GPU memory allocation" page).
_JAX_GPU_MEM_FRACTION = 0.75


def plan(cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device], *,
         chip: chips.Chip | None = None, mfu: float = DEFAULT_MFU,
         vocab_size: int | None = None, compile_step: bool = True) -> dict[str, Any]:
  """The plan of a `jaxgen train` run of `cfg` on `devices`, as a JSON-able dict.

  `errors` lists every problem that would stop the run (the mesh against the
  devices, the batch against the data-parallel size, a step too big for
  `chip`), one line each; `warnings` what would run but waste the devices.
  With errors in the mesh or batch nothing is built and the rest is absent.
  `compile_step=False` skips compiling: no temporaries, no fit verdict.
  """
  devices = list(devices)
  report: dict[str, Any] = {"devices": len(devices), "platform": devices[0].platform,
                            "errors": config_check.launch_problems(cfg, len(devices)),
                            "warnings": []}
  if report["errors"]:
    return report
  t, seq_len = cfg.train, cfg.data.seq_len
  rules = tuple(tuple(r) for r in cfg.mesh.logical_axis_rules)
  source_len = cfg.data.get("source_len", 0)
  model_cfg = model_config(cfg.model, tokenizer_vocab_size(cfg, vocab_size), seq_len, source_len)
  optimizer, schedule = make_optimizer(t)
  graphdef, abstract = abstract_train_state(model_cfg, optimizer, t.seed)
  # Stand-in devices are one process: the across-host layout changes which
  # host holds a shard, not its size, so the plan lays the axes out plainly.
  mesh_cfg = cfg.mesh.copy_and_resolve_references()
  with mesh_cfg.unlocked():
    mesh_cfg.dcn_data = mesh_cfg.dcn_fsdp = 1
  mesh = mesh_lib.make_mesh(mesh_cfg, devices)
  state_sh = specs.state_shardings(abstract, mesh, rules)
  dp = mesh_lib.data_parallel_size(dict(mesh.shape), rules)
  tokens_per_step = t.batch_size * seq_len
  flops_per_token = model_flops_per_token(model_cfg, abstract.params, seq_len, source_len)
  groups = parameter_groups(abstract.params, state_sh.params)
  params_bytes = sum(g["bytes_per_device"] for g in groups)
  report.update(
      model=type(model_cfg).__name__, vocab_size=model_cfg.vocab_size,
      params=count_params(abstract.params), flops_per_token=flops_per_token,
      flops_per_step=flops_per_token * tokens_per_step, tokens_per_step=tokens_per_step,
      batch_size=t.batch_size, seq_len=seq_len, mesh=dict(mesh.shape), data_parallel=dp,
      rows_per_device=t.batch_size // dp, grad_accum_steps=t.grad_accum_steps,
      parameter_groups=groups,
      per_device_bytes={"params": params_bytes,
                        "optimizer": _bytes_per_device(abstract.opt_state, state_sh.opt_state)},
      chip=dataclasses.asdict(chip) if chip else None, fits=None, mfu=mfu,
      step_time_s=None, tokens_per_s=None)
  report["warnings"] += _replication_warnings(abstract.params, dict(mesh.shape), rules,
                                              registry.of_config(model_cfg).axis_keys)
  if chip is not None:
    step_time = report["flops_per_step"] / (mfu * chip.peak_flops * len(devices))
    report.update(step_time_s=step_time, tokens_per_s=tokens_per_step / step_time)
  if compile_step:
    batch_sh = specs.batch_sharding(mesh, rules)
    step = jit_train_step(graphdef, optimizer, schedule, t, state_sh, batch_sh, rules=rules)
    start = time.perf_counter()
    compiled = step.lower(abstract, abstract_batch(cfg)).compile()
    report["compile_s"] = time.perf_counter() - start
    _add_memory(report, compiled.memory_analysis(), chip)
  return report


def tokenizer_vocab_size(cfg: ml_collections.ConfigDict, vocab_size: int | None = None) -> int:
  """The vocabulary the plan assumes: `vocab_size` (--vocab_size) if given, else
  model.vocab_size if set, else the tokenizer's, which for data.tokenizer='char'
  means reading the training text."""
  if vocab_size:
    return vocab_size
  if cfg.model.get("vocab_size", 0):
    return cfg.model.vocab_size
  from jaxgen import tasks  # pylint: disable=import-outside-toplevel
  return tasks.task_of(cfg.data).vocabulary_size(cfg)


def abstract_batch(cfg: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of one global training batch: the task's batch schema."""
  from jaxgen import tasks  # pylint: disable=import-outside-toplevel
  return tasks.task_of(cfg.data).batch_spec(cfg, cfg.train.batch_size).abstract()


def parameter_groups(params: nnx.State, shardings: nnx.State) -> list[dict[str, Any]]:
  """One entry per parameter, with the layers of an unscanned stack folded into one
  (`blocks.*.attn.wq`): shape, logical axes, mesh axes and bytes per device."""
  groups: dict[tuple, dict[str, Any]] = {}
  is_var = lambda x: isinstance(x, nnx.Variable)
  flat_params = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_var)[0]
  flat_sh = jax.tree.leaves(shardings, is_leaf=is_var)
  for (path, var), sh_var in zip(flat_params, flat_sh):
    value, named = var.get_value(), sh_var.get_value()
    name = _path_name(path)
    axes = var.get_metadata().get("logical_axes") or (None,) * value.ndim
    spec = tuple(named.spec) + (None,) * (value.ndim - len(named.spec))
    key = (name, value.shape)
    group = groups.setdefault(key, {
        "name": name, "count": 0, "shape": list(value.shape), "dtype": str(value.dtype),
        "logical_axes": list(axes), "mesh_axes": [_axes_str(s) for s in spec],
        "bytes_per_device": 0})
    group["count"] += 1
    group["bytes_per_device"] += _leaf_bytes(value, named)
  return list(groups.values())


def _path_name(path) -> str:
  """'blocks.*.attn.wq': the layer index of an unscanned stack becomes '*'."""
  return ".".join("*" if isinstance(k, int) else str(k)
                  for k in (getattr(p, "key", p) for p in path))


def _bytes_per_device(tree: Any, shardings: Any) -> int:
  return sum(_leaf_bytes(v, s) for v, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


def _leaf_bytes(value, named_sharding) -> int:
  return math.prod(named_sharding.shard_shape(value.shape)) * np.dtype(value.dtype).itemsize


def _axes_str(entry) -> str | None:
  if entry is None:
    return None
  return entry if isinstance(entry, str) else "+".join(entry)


def _replication_warnings(params: nnx.State, mesh_shape: dict[str, int], rules,
                          axis_keys: dict[str, str]) -> list[str]:
  """A line per logical axis that a rule would shard but whose size does not divide;
  `axis_keys` names the config key that sets an axis's size."""
  found: dict[tuple, list[str]] = {}
  is_var = lambda x: isinstance(x, nnx.Variable)
  for path, var in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_var)[0]:
    axes = var.get_metadata().get("logical_axes")
    if not axes:
      continue
    name = _path_name(path)
    for dim in specs.indivisible_dims(axes, var.get_value().shape, mesh_shape, rules):
      names = found.setdefault(dim, [])
      if name not in names:
        names.append(name)
  lines = []
  for (axis, size, mesh_axes), names in found.items():
    key = f" = {axis_keys[axis]}" if axis in axis_keys else ""
    over = " x ".join(f"mesh.{a}={mesh_shape[a]}" for a in mesh_axes)
    lines.append(f"the '{axis}' axis (size {size}{key}) does not divide over {over}: "
                 f"{', '.join(names)} stay replicated there instead of split, each device "
                 f"holding all of it; use sizes that divide {size}")
  return lines


def _add_memory(report: dict[str, Any], analysis, chip: chips.Chip | None) -> None:
  """Temporaries, total and the fit verdict from the compiler's memory analysis."""
  per_device = report["per_device_bytes"]
  if analysis is None:  # a backend without memory analysis
    per_device.update(temporaries=None, other=None, total=None)
    return
  args, out = analysis.argument_size_in_bytes, analysis.output_size_in_bytes
  alias, temp = analysis.alias_size_in_bytes, analysis.temp_size_in_bytes
  report["compiler_memory"] = {"arguments": args, "outputs": out, "aliased": alias,
                               "temporaries": temp}
  state = per_device["params"] + per_device["optimizer"]
  # The donated state's outputs reuse its buffers: only new outputs count.
  per_device.update(temporaries=temp, other=args - state + out - alias,
                    total=args + out - alias + temp)
  report["temporaries_from"] = report["platform"]
  if chip is None:
    return
  total = per_device["total"]
  report["fits"] = total <= chip.memory_bytes
  if not report["fits"]:
    fix = ("raise mesh.fsdp to shard parameters and optimizer state over more devices"
           if state > chip.memory_bytes else
           "lower train.batch_size, raise train.grad_accum_steps, set model.remat='full', "
           "or raise mesh.fsdp")
    report["errors"].append(f"the train step needs {format_bytes(total)} per device, more "
                            f"than the {chip.memory} of one {chip.name}; {fix}")
  elif chip.platform == "gpu" and total > _JAX_GPU_MEM_FRACTION * chip.memory_bytes:
    report["warnings"].append(
        f"the step needs {total / chip.memory_bytes:.0%} of the memory of one {chip.name}; JAX "
        f"preallocates {_JAX_GPU_MEM_FRACTION:.0%} of it by default, so run with "
        "XLA_PYTHON_CLIENT_MEM_FRACTION=0.95")


def format_bytes(n: float | None) -> str:
  if n is None:
    return "unknown"
  for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if abs(n) >= size:
      return f"{n / size:.3g} {unit}"
  return f"{int(n)} B"


def format_text(report: dict[str, Any], label: str = "the config") -> str:
  """The plan as people read it: a line per figure, a row per parameter group."""
  chip = report.get("chip")
  n = report["devices"]
  on = f"{n} x {chip['name']}" if chip else f"{n} device{'s' * (n != 1)}"
  head = f"plan for {label} on {on}"
  if "compile_s" in report:
    head += (f", compiled for {n} {report['platform'].upper()} device{'s' * (n != 1)} "
             f"in {report['compile_s']:.1f} s")
  lines = [head]
  if "params" not in report:
    return "\n".join(lines)
  mesh = report["mesh"]
  lines += [
      f"model        {report['model']}: {report['params']:,} parameters, vocabulary "
      f"{report['vocab_size']:,}",
      f"FLOPs        {_si(report['flops_per_token'])} per token (6N + attention), "
      f"{_si(report['flops_per_step'])} per step of {report['batch_size']} x "
      f"{report['seq_len']} tokens",
      f"mesh         {' '.join(f'{a}={s}' for a, s in mesh.items())}: "
      + (f"the batch of {report['batch_size']} splits {report['data_parallel']} ways, "
         if report["data_parallel"] > 1 else f"the batch of {report['batch_size']} is not split, ")
      + f"{report['rows_per_device']} rows per device"
      + (f" in {report['grad_accum_steps']} micro-batches" if report["grad_accum_steps"] > 1
         else ""),
      "sharding     parameter, shape, logical axes -> mesh axes, bytes per device"]
  rows = []
  for g in report["parameter_groups"]:
    count = f"{g['count']} x " if g["count"] > 1 else ""
    logical = ", ".join(a or "-" for a in g["logical_axes"])
    mesh_axes = ", ".join(a or "-" for a in g["mesh_axes"])
    rows.append((f"  {g['name']}", f"{count}{g['shape']}", f"({logical}) -> ({mesh_axes})",
                 format_bytes(g["bytes_per_device"])))
  widths = [max(len(r[i]) for r in rows) for i in range(3)]
  lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>9}"
            for a, b, c, d in rows]
  per = report["per_device_bytes"]
  lines += ["memory       per device",
            f"  parameters   {format_bytes(per['params']):>9}",
            f"  optimizer    {format_bytes(per['optimizer']):>9}   AdamW's two moments"]
  if per.get("temporaries") is not None:
    where = f"XLA:{report['temporaries_from'].upper()}'s figure for the compiled step"
    if chip and report["temporaries_from"] != chip["platform"]:
      where += f", an estimate for one {chip['name']}"
    lines += [f"  temporaries  {format_bytes(per['temporaries']):>9}   {where}",
              f"  other        {format_bytes(per['other']):>9}   batch, step, RNG, metrics"]
    total = f"  total        {format_bytes(per['total']):>9}"
    if chip:
      verdict = "fits" if report["fits"] else "DOES NOT FIT"
      share = per["total"] / chip["memory_bytes"]
      total += (f"   of {chip['memory']} on one {chip['name']}: {verdict} "
                f"({f'{share:.0%}' if share >= 0.01 else 'under 1%'})")
    lines.append(total)
  if report.get("step_time_s") is not None:
    step = report["step_time_s"]
    step = (f"{step:.3g} s" if step >= 1 else f"{step * 1e3:.3g} ms" if step >= 1e-3
            else f"{step * 1e6:.3g} us")
    lines.append(f"step time    {step} at {report['mfu']:.0%} MFU on {on} "
                 f"({_si(chip['peak_flops'])}FLOP/s bf16 each): "
                 f"{report['tokens_per_s']:,.0f} tokens/s")
  else:
    lines.append("step time    unknown: pass --chip to estimate it (and to check the fit)")
  return "\n".join(lines)


def _si(x: float) -> str:
  for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if x >= size:
      return f"{x / size:.3g} {unit}"
  return f"{x:.3g} "
