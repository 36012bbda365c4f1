"""One job from several processes: JAX's multi-controller runtime.

Each process (one per host, or one per GPU) runs the same `jaxgen train`
command; `jax.distributed.initialize` joins them into one job whose mesh spans
every process's devices. Where each setting comes from, first match wins:

1. the config: `distributed.coordinator_address`, `num_processes`, `process_id`,
   `local_device_ids`;
2. the environment: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID,
   JAX_LOCAL_DEVICE_IDS (what launch/local_multiprocess.sh and launch/k8s set);
3. a cluster JAX detects itself: SLURM, Open MPI, TPU pods, Kubernetes;
4. otherwise one plain process, which never calls `initialize`.

`resolve` reads all of that without touching a JAX backend, so the command
line can decide how to run before anything else starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from jaxgen.errors import UserError

ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"

# Every local device: an empty list passes JAX's "unset" checks without
# restricting the visible devices.
ALL_LOCAL = ()


@dataclasses.dataclass(frozen=True)
class Launch:
  """How this process joins the job (`num_processes == 1`: it runs alone)."""
  num_processes: int
  process_id: int = 0
  coordinator: str | None = None
  local_device_ids: tuple[int, ...] | None = None  # None: JAX's default
  cluster: str | None = None  # the cluster JAX detected, e.g. "slurm"
  source: str = "a single process"  # where the settings came from, for the start line

  @property
  def multi_process(self) -> bool:
    return self.num_processes > 1


def resolve(dist: Any, environ: Mapping[str, str] | None = None) -> Launch:
  """The settings for this process from the config section `dist`, the
  environment and the cluster, in that order of precedence."""
  env = os.environ if environ is None else environ
  sources = []

  def pick(name: str, from_config, env_key: str, parse):
    if from_config is not None:
      sources.append(f"distributed.{name}")
      return from_config
    if env.get(env_key):
      try:
        value = parse(env[env_key])
      except ValueError:
        raise UserError(f"{env_key}={env[env_key]!r} cannot be read; {_ENV_FORMAT[env_key]}") from None
      sources.append(env_key)
      return value
    return None

  address = pick("coordinator_address", dist.coordinator_address or None, ENV_ADDRESS, str)
  count = pick("num_processes", dist.num_processes or None, ENV_NUM_PROCESSES, int)
  index = pick("process_id", dist.process_id if dist.process_id >= 0 else None,
               ENV_PROCESS_ID, int)
  ids = pick("local_device_ids", _parse_ids(dist.local_device_ids) if dist.local_device_ids
             else None, ENV_LOCAL_DEVICE_IDS, _parse_ids)

  cluster = None
  if None in (address, count, index):
    cluster = _detected_cluster(env)
    if cluster is not None:
      name, env_cls = cluster
      count = count if count is not None else env_cls.get_process_count()
      index = index if index is not None else env_cls.get_process_id()
      if ids is None and name == "slurm":
        ids = _slurm_local_devices(env)
      sources.append(f"{_CLUSTER_NAMES.get(name, name)} detected")
      cluster = name
  if count is None or count <= 1:
    if sources and count is None and (address or index is not None):
      raise UserError(f"{' and '.join(sources)} given, but not the number of processes; "
                      f"set {ENV_NUM_PROCESSES} or distributed.num_processes")
    return Launch(num_processes=1)
  if index is None:
    raise UserError(f"{count} processes but no process id for this one; set {ENV_PROCESS_ID} "
                    "or distributed.process_id (0 to n-1, 0 on the coordinator's host)")
  if not 0 <= index < count:
    raise UserError(f"process id {index} is outside 0..{count - 1} for {count} processes")
  if address is None and cluster is None:
    raise UserError(f"{count} processes but no coordinator; set {ENV_ADDRESS} or "
                    "distributed.coordinator_address to host:port of process 0")
  return Launch(count, index, address, tuple(ids) if ids is not None else None, cluster,
                ", ".join(sources))


def initialize(launch: Launch, dist: Any) -> str:
  """Joins the job; returns this process's start line. Call before anything
  touches a JAX backend; a coordinator that cannot be reached fails in one
  line within `distributed.initialization_timeout_s`."""
  import jax
  kwargs = dict(coordinator_address=launch.coordinator, num_processes=launch.num_processes,
                process_id=launch.process_id,
                initialization_timeout=int(dist.initialization_timeout_s),
                heartbeat_timeout_seconds=int(dist.heartbeat_timeout_s))
  if launch.local_device_ids is not None:
    kwargs["local_device_ids"] = list(launch.local_device_ids)
  if launch.cluster is not None:
    kwargs["cluster_detection_method"] = launch.cluster
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # XLA raises its own runtime error types for these
    text = " ".join(str(e).split())
    if "DEADLINE_EXCEEDED" in text or "timed out" in text.lower() or "UNAVAILABLE" in text:
      raise UserError(
          f"process {launch.process_id} of {launch.num_processes} could not join the job "
          f"at coordinator {_coordinator(launch)} within {dist.initialization_timeout_s} s; "
          "check that process 0 runs and that "
          "the address is reachable from this host "
          "(distributed.initialization_timeout_s waits longer)") from None
    raise
  devices = ",".join(f"{d.platform}:{d.id}" for d in jax.local_devices())
  return (f"jaxgen: process {jax.process_index()} of {jax.process_count()}, local devices "
          f"[{devices}], coordinator {_coordinator(launch)} "
          f"({launch.source})")


def shutdown() -> None:
  """Leaves the job: waits for every process to get here, so none is cut off."""
  import jax
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()


def _coordinator(launch: Launch) -> str:
  """The address JAX joined, where a cluster chose it."""
  try:
    from jax._src import distributed as jax_distributed
    return jax_distributed.global_state.coordinator_address or launch.coordinator or "?"
  except (ImportError, AttributeError):
    return launch.coordinator or "chosen by the cluster"


def _parse_ids(text: str) -> list[int]:
  return [int(i) for i in text.split(",") if i.strip()]


_ENV_FORMAT = {
    ENV_ADDRESS: "use host:port",
    ENV_NUM_PROCESSES: "use a whole number of processes, e.g. 2",
    ENV_PROCESS_ID: "use this process's index, 0 to n-1",
    ENV_LOCAL_DEVICE_IDS: "use comma-separated device ids, e.g. 0,1",
}
_CLUSTER_NAMES = {"slurm": "SLURM", "ompi": "Open MPI", "gke_tpu": "TPU pod",
                  "gce_tpu": "TPU pod", "k8s": "Kubernetes", "mpi4py": "MPI"}


def _detected_cluster(env: Mapping[str, str]):
  """(name, JAX's cluster class) of the cluster this process runs in, or None.

  JAX's detectors read os.environ; `env` is os.environ outside tests.
  """
  try:
    from jax._src import clusters
  except ImportError:  # a JAX without cluster detection: the plain settings only
    return None
  for cls in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if getattr(cls, "opt_in_only_method", False):
      continue
    try:
      present = cls.is_env_present()
    except Exception:  # a detector that cannot run here (a missing client library)
      present = False
    if present:
      return getattr(cls, "name", cls.__name__.lower()), cls
  return None


def _slurm_local_devices(env: Mapping[str, str]) -> tuple[int, ...] | None:
  """The devices of this SLURM task.

  JAX assumes one task per device and gives each task only the device that
  equals its local rank. With one task per node (several GPUs per task), or
  with SLURM binding one GPU per task through CUDA_VISIBLE_DEVICES, that is
  wrong: the task must take every device it sees.
  """
  per_node = _slurm_tasks_on_this_node(env)
  visible = [v for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
  if per_node == 1 or (visible and len(visible) * (per_node or 1) <= _gpus_on_node(env, visible)):
    return ALL_LOCAL
  return None  # several tasks sharing the node's devices: one each, JAX's default


def _slurm_tasks_on_this_node(env: Mapping[str, str]) -> int | None:
  """From SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE, e.g. '2(x3),1'."""
  spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
  if not spec:
    return None
  counts = []
  for part in spec.split(","):
    m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
    if not m:
      return None
    counts += [int(m.group(1))] * int(m.group(2) or 1)
  node = int(env.get("SLURM_NODEID", "0") or 0)
  return counts[node] if node < len(counts) else None


def _gpus_on_node(env: Mapping[str, str], visible: list[str]) -> int:
  try:
    return int(env.get("SLURM_GPUS_ON_NODE", ""))
  except ValueError:
    return len(visible)
