"""Running the training loop in tests, and checking what it trained: the losses it
logged and the sharding of the state it carried (shared by the training, checkpoint,
command and seq2seq tests)."""

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from jaxgen.parallel import mesh as mesh_lib
from jaxgen.train import loop
from jaxgen.train.loop import train_and_evaluate
from tests.helpers import REPO, xla_flags


def train_losses(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return np.array([l["train_loss"] for l in lines if "train_loss" in l])


def run(cfg, workdir, mesh=(1, 1, 1)):
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = mesh
  devices = jax.devices()[: mesh[0] * mesh[1] * mesh[2]]
  # The loop uses every visible device; restrict via the mesh helper's device list.
  original = mesh_lib.make_mesh
  mesh_lib.make_mesh = lambda m, d=None: original(m, devices)
  try:
    return train_and_evaluate(cfg, str(workdir))
  finally:
    mesh_lib.make_mesh = original


# What DEFAULT_LOGICAL_AXIS_RULES (jaxgen/config.py) give the tiny models' parameters on a
# mesh whose fsdp and tensor axes are both larger than one, written out by hand:
# 'embed' -> fsdp, 'vocab'/'heads'/'kv_heads'/'mlp' -> tensor, 'head_dim' and unnamed
# dimensions replicated. Block numbers are dropped from the names.
TRANSFORMER_SPECS = {
    "embed.table": ("tensor", "fsdp"),  # (vocab, embed)
    "pos_embed": (None, "fsdp"),  # (position, embed)
    "blocks.attn.wq": ("fsdp", "tensor", None),  # (embed, heads, head_dim)
    "blocks.attn.wk": ("fsdp", "tensor", None),  # (embed, kv_heads, head_dim)
    "blocks.attn.wv": ("fsdp", "tensor", None),
    "blocks.attn.wo": ("tensor", None, "fsdp"),  # (heads, head_dim, embed)
    "blocks.mlp.wi": ("fsdp", "tensor"),  # (embed, mlp)
    "blocks.mlp.wo": ("tensor", "fsdp"),  # (mlp, embed)
    "blocks.attn_norm.scale": ("fsdp",),  # (embed,)
    "blocks.mlp_norm.scale": ("fsdp",),
    "final_norm.scale": ("fsdp",),
}


LSTM_SPECS = {
    "embedding": ("tensor", "fsdp"),  # (vocab, embed)
    "layers.w_ih": ("fsdp", "tensor"),  # (embed, 4 * hidden: 'mlp')
    "layers.w_hh": ("fsdp", "tensor"),
    "layers.bias": ("tensor",),  # (mlp,)
    "head_w": ("fsdp", "tensor"),  # (embed, vocab)
    "head_b": ("tensor",),  # (vocab,)
}


def layout(state) -> dict:
  """{dotted path: (PartitionSpec as a full-length tuple, mesh shape, devices)} of
  every array in a train state, each array also checked to hold shards of the size
  its sharding says on every one of its devices."""
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
    name = ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path)
    name = re.sub(r"\.value$", "", name)
    sh = x.sharding
    assert isinstance(sh, jax.sharding.NamedSharding), (name, sh)
    spec = tuple(sh.spec) + (None,) * (x.ndim - len(sh.spec))
    shard_shape = sh.shard_shape(x.shape)
    assert len(x.addressable_shards) == len(sh.device_set), name
    assert all(s.data.shape == shard_shape for s in x.addressable_shards), name
    out[name] = (spec, dict(sh.mesh.shape), len(sh.device_set))
  return out


def check_layout(got: dict, mesh, expected_specs: dict) -> None:
  """Params and both Adam moments carry `expected_specs` on a mesh with fsdp and
  tensor > 1 (fully replicated otherwise); step, RNG and counters are replicated;
  every array lives on the whole mesh."""
  want_mesh = dict(zip(("data", "fsdp", "tensor"), mesh))
  sharded = mesh[1] > 1 and mesh[2] > 1
  params = {}
  for name, (spec, mesh_shape, n_devices) in got.items():
    assert mesh_shape == want_mesh and n_devices == np.prod(mesh), (name, mesh_shape)
    m = re.fullmatch(r"(params|opt_state\..*\.(?:mu|nu))\.(.+)", name)
    if m is None:  # step, rng, Adam's and the schedule's counts
      assert all(a is None for a in spec), (name, spec)
      continue
    which, param = m.groups()
    param = re.sub(r"\.\d+\.", ".", param)  # blocks.0.attn.wq -> blocks.attn.wq
    assert param in expected_specs, f"no expected sharding written for {param}"
    want = expected_specs[param] if sharded else (None,) * len(spec)
    assert spec == want, f"{name}: {spec}, expected {want} on mesh {mesh}"
    params.setdefault(which.split(".")[-1], set()).add(param)
  # Every parameter was seen, and the optimizer's moments track each of them.
  assert params["params"] == set(expected_specs), params["params"]
  assert params["mu"] == params["nu"] == params["params"]


_CREATE_TRAIN_STATE, _JIT_TRAIN_STEP = loop.create_train_state, loop.jit_train_step


class StateSpy:
  """Records the layout of the state a real run trains: as `create_train_state` returns
  it (called with every explicit or implicit transfer disallowed, so a state built on
  one device or on the host and then moved onto the mesh fails), entering the first
  step (a restored state) and leaving the last."""

  def __init__(self, monkeypatch):
    self.created = self.first_in = self.last_out = self.first_step = None
    create, jit_step = _CREATE_TRAIN_STATE, _JIT_TRAIN_STEP  # not an earlier spy's

    def guarded_create(*args, **kwargs):
      try:
        with jax.transfer_guard("disallow_explicit"):
          graphdef, state, shardings = create(*args, **kwargs)
          jax.block_until_ready(state)
      except Exception as e:
        if "Disallowed" not in str(e):
          raise
        pytest.fail(f"create_train_state moved arrays between devices or from the host "
                    f"(built the state whole, then placed it?): {str(e)[:300]}")
      self.created = layout(state)
      return graphdef, state, shardings

    def spied_jit(*args, **kwargs):
      step_fn = jit_step(*args, **kwargs)

      def step(state, batch):
        if self.first_in is None:
          self.first_in, self.first_step = layout(state), int(state.step)
        state, metrics = step_fn(state, batch)
        self.last_out = layout(state)
        return state, metrics
      return step

    monkeypatch.setattr(loop, "create_train_state", guarded_create)
    monkeypatch.setattr(loop, "jit_train_step", spied_jit)

  def check(self, mesh, expected_specs) -> None:
    for when in ("created", "first_in", "last_out"):
      assert getattr(self, when) is not None, f"no state seen {when}"
      check_layout(getattr(self, when), mesh, expected_specs)


def last_by_step(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {l["step"]: l["train_loss"] for l in lines if "train_loss" in l}


DEADLINE_S = 180  # for any one wait on a subprocess: a change that stalls fails, not hangs


class Cli:
  """`python -m jaxgen train ...` in a subprocess. Threads read its stdout and stderr,
  so waiting for a line has a deadline, and a full pipe never blocks the run."""

  def __init__(self, args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", XLA_FLAGS=xla_flags())
    self.proc = subprocess.Popen([sys.executable, "-m", "jaxgen", "train", *args], cwd=REPO,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
    self.out, self.err = [], []
    self._lines = queue.Queue()
    self._readers = [threading.Thread(target=self._read, args=a, daemon=True)
                     for a in ((self.proc.stdout, self.out, self._lines),
                               (self.proc.stderr, self.err, None))]
    for t in self._readers:
      t.start()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.proc.poll() is None:
      self.proc.kill()  # a path under test failed; do not leave the run behind
    self.proc.wait()

  @staticmethod
  def _read(pipe, sink, lines):
    for line in pipe:
      sink.append(line)
      if lines is not None:
        lines.put(line)
    if lines is not None:
      lines.put(None)

  def wait_for(self, prefix: str, timeout: float = DEADLINE_S) -> str:
    """The first line (from now) starting with `prefix`; fails at EOF or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
      try:
        line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        pytest.fail(f"no line starting {prefix!r} within {timeout} s; stdout ends "
                    f"{''.join(self.out[-3:])!r}")
      if line is None:
        pytest.fail(f"the run ended before printing {prefix!r}; stderr ends "
                    f"{''.join(self.err[-5:])!r}")
      if line.startswith(prefix):
        return line

  def finish(self, timeout: float = DEADLINE_S) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) once the run has ended."""
    try:
      rc = self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      pytest.fail(f"the run did not end within {timeout} s")
    for t in self._readers:
      t.join(timeout=10)
    return rc, "".join(self.out), "".join(self.err)
