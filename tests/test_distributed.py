"""Where a process's job settings come from, SLURM's device layouts, and DCN meshes."""

import dataclasses

import numpy as np
import pytest

from jaxgen import config as base
from jaxgen import distributed
from jaxgen.distributed import resolve
from jaxgen.errors import UserError
from jaxgen.parallel.mesh import device_grid
from tests.helpers import one_line


def _dist(**keys):
  d = base.base_config().distributed
  d.update(keys)
  return d


@pytest.fixture
def no_cluster(monkeypatch):
  """This machine as no cluster: only what a test passes counts."""
  monkeypatch.setattr(distributed, "_detected_cluster", lambda env: None)


def test_nothing_set_is_one_plain_process(no_cluster):
  launch = resolve(_dist(), {})
  assert launch == distributed.Launch(num_processes=1) and not launch.multi_process


def test_environment_variables(no_cluster):
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3", "JAX_LOCAL_DEVICE_IDS": "0,1"}
  launch = resolve(_dist(), env)
  assert (launch.coordinator, launch.num_processes, launch.process_id,
          launch.local_device_ids) == ("10.0.0.1:1234", 4, 3, (0, 1))
  assert launch.source == ("JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, "
                           "JAX_LOCAL_DEVICE_IDS")


def test_config_wins_over_environment_key_by_key(no_cluster):
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
         "JAX_PROCESS_ID": "3"}
  launch = resolve(_dist(process_id=1, coordinator_address="h:99"), env)
  assert (launch.coordinator, launch.num_processes, launch.process_id) == ("h:99", 4, 1)
  assert launch.source == ("distributed.coordinator_address, JAX_NUM_PROCESSES, "
                           "distributed.process_id")


@pytest.mark.parametrize("env, needle", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "no coordinator"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "no process id"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "1"}, "not the number of processes"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "outside 0..1"),
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' cannot be read"),
])
def test_incomplete_settings_are_one_line(no_cluster, env, needle):
  with pytest.raises(UserError) as err:
    resolve(_dist(), env)
  assert needle in one_line(err)


def test_one_process_from_the_environment_runs_plainly(no_cluster):
  assert not resolve(_dist(), {"JAX_NUM_PROCESSES": "1"}).multi_process


class _FakeSlurm:
  """JAX's SLURM detector reading a test's variables."""

  def __init__(self, env):
    self.env = env

  def get_process_count(self):
    return int(self.env["SLURM_NTASKS"])

  def get_process_id(self):
    return int(self.env["SLURM_PROCID"])


def _slurm(monkeypatch, **env):
  env = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_LOCALID": "0",
         "SLURM_NODEID": "0", **env}
  monkeypatch.setattr(distributed, "_detected_cluster",
                      lambda e: ("slurm", _FakeSlurm(env)))
  return resolve(_dist(), env)


def test_slurm_one_task_per_node_takes_every_gpu_of_the_node(monkeypatch):
  # 2 nodes x 8 GPUs, one task each: JAX alone would give each task GPU 0 only.
  launch = _slurm(monkeypatch, SLURM_NTASKS="2", SLURM_PROCID="1",
                  SLURM_STEP_TASKS_PER_NODE="1(x2)", SLURM_GPUS_ON_NODE="8",
                  CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
  assert launch.local_device_ids == distributed.ALL_LOCAL
  assert (launch.num_processes, launch.process_id, launch.cluster) == (2, 1, "slurm")
  assert launch.coordinator is None and launch.source == "SLURM detected"


def test_slurm_one_task_per_gpu_bound_by_slurm_takes_its_one_gpu(monkeypatch):
  # --gpus-per-task=1: each task sees only its own GPU, as device 0.
  launch = _slurm(monkeypatch, SLURM_NTASKS="16", SLURM_PROCID="11", SLURM_LOCALID="3",
                  SLURM_NODEID="1", SLURM_STEP_TASKS_PER_NODE="8(x2)",
                  SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES="3")
  assert launch.local_device_ids == distributed.ALL_LOCAL


def test_slurm_tasks_sharing_the_node_gpus_take_one_each(monkeypatch):
  # Every task sees all 8 GPUs: JAX's default, device = local rank.
  launch = _slurm(monkeypatch, SLURM_NTASKS="16", SLURM_PROCID="11", SLURM_LOCALID="3",
                  SLURM_NODEID="1", SLURM_STEP_TASKS_PER_NODE="8(x2)",
                  SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
  assert launch.local_device_ids is None


def test_a_single_slurm_task_runs_plainly(monkeypatch):
  assert not _slurm(monkeypatch, SLURM_NTASKS="1", SLURM_PROCID="0").multi_process


def test_slurm_environment_is_detected_by_jax(monkeypatch):
  env = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
  for name, value in env.items():  # JAX's detectors read os.environ
    monkeypatch.setenv(name, value)
  launch = resolve(_dist(), env)
  assert (launch.cluster, launch.num_processes, launch.source) == ("slurm", 2, "SLURM detected")


@dataclasses.dataclass(frozen=True)
class _Device:
  id: int
  process_index: int
  platform: str = "cpu"
  device_kind: str = "cpu"


def _mesh_cfg(**sizes):
  m = base.base_config().mesh
  m.update(sizes)
  return m


def _hosts(grid) -> np.ndarray:
  return np.vectorize(lambda d: d.process_index)(grid)


def test_default_mesh_keeps_device_order():
  devices = [_Device(i, i // 4) for i in range(8)]
  grid = device_grid(_mesh_cfg(data=2, fsdp=4), devices)
  assert [d.id for d in grid.flat] == list(range(8))


def test_dcn_data_puts_hosts_on_the_data_axis_and_fsdp_within_each():
  devices = [_Device(i, i // 4) for i in range(8)]
  grid = device_grid(_mesh_cfg(data=2, fsdp=2, tensor=2, dcn_data=2), devices)
  assert grid.shape == (2, 2, 2)
  assert (_hosts(grid)[0] == 0).all() and (_hosts(grid)[1] == 1).all()


def test_dcn_fsdp_puts_hosts_on_the_fsdp_axis():
  devices = [_Device(i, i // 4) for i in range(8)]
  grid = device_grid(_mesh_cfg(data=4, fsdp=2, dcn_fsdp=2), devices)
  assert (_hosts(grid)[:, 0] == 0).all() and (_hosts(grid)[:, 1] == 1).all()


@pytest.mark.parametrize("sizes, needle", [
    (dict(data=2, fsdp=4, dcn_fsdp=3), "mesh.dcn_fsdp=3 does not divide mesh.fsdp=4"),
    (dict(data=4, fsdp=2, dcn_data=4), "must equal the number of hosts (2 processes)"),
])
def test_bad_dcn_sizes_are_one_line(sizes, needle):
  devices = [_Device(i, i // 4) for i in range(8)]
  with pytest.raises(UserError) as err:
    device_grid(_mesh_cfg(**sizes), devices)
  assert needle in one_line(err)
