"""What the launch-script tests share: tiny runs, clean environments, processes ended for sure."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"

# The line jaxgen's runtime prints in every process at start.
START_LINE = re.compile(r"^jaxgen: process (\d+) of (\d+)\b", re.MULTILINE)

# Variables through which a parent job could leak into a child's idea of its cluster.
_CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "JAX_LOCAL_DEVICE_IDS", "JAX_COORDINATOR_BIND_ADDRESS", "XLA_FLAGS",
                 "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMI_SIZE")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
  """os.environ without any cluster a child could detect (SLURM_CONF is kept), on CPU."""
  env = {k: v for k, v in os.environ.items()
         if k not in _CLUSTER_VARS and not (k.startswith("SLURM_") and k != "SLURM_CONF")}
  env["JAX_PLATFORMS"] = "cpu"
  env.update(extra)
  return env


def tiny_train_args(workdir: pathlib.Path, source: str, steps: int = 6) -> list[str]:
  """`jaxgen train` arguments (after the program) for a run of a few seconds on 2 cores."""
  return ["train", "--config=configs/shakespeare_char_cpu.py", f"--workdir={workdir}",
          f"--config.data.source={source}", "--config.model.num_layers=2",
          "--config.model.embed_dim=32", "--config.data.seq_len=32",
          f"--config.train.steps={steps}", "--config.train.batch_size=8",
          "--config.train.warmup_steps=2", "--config.train.log_every=1",
          "--config.eval.every_steps=0", "--config.eval.full_split_at_end=False",
          "--config.checkpoint.every_steps=0", "--config.sample.num_tokens=0"]


def run(cmd, timeout: float, **kwargs) -> subprocess.CompletedProcess:
  """subprocess.run in its own process group, the whole group killed if it outlives `timeout`."""
  kwargs.setdefault("stdout", subprocess.PIPE)
  kwargs.setdefault("stderr", subprocess.PIPE)
  with subprocess.Popen(cmd, start_new_session=True, text=True, **kwargs) as p:
    try:
      out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      kill_group(p)
      out, err = p.communicate()
      raise AssertionError(f"{cmd[:3]}... still running after {timeout} s; "
                           f"stdout:\n{out}\nstderr:\n{err}") from None
    finally:
      kill_group(p)
  return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def kill_group(p: subprocess.Popen) -> None:
  """SIGKILL the process group `p` leads (started with start_new_session=True), if any is left.

  SIGKILL, not SIGTERM: JAX's preemption notifier catches SIGTERM.
  """
  try:
    os.killpg(p.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def train_losses(workdir: pathlib.Path) -> dict[int, float]:
  """step -> train_loss from WORKDIR/metrics.jsonl (the last line per step)."""
  losses = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if "train_loss" in record:
      losses[record["step"]] = record["train_loss"]
  return losses
