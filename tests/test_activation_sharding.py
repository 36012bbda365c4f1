"""Activation sharding: the compiled train step moves no tensor the wasteful way.

Without constraints on activations, XLA's sharding propagation guesses layouts
around reshapes and the embedding lookups and then falls back to gathering a
whole tensor and re-slicing it, printing "Involuntary full rematerialization"
from C++ to file descriptor 2. The compiles run in a child process
(tests/act_sharding_worker.py) whose stderr is read here.
"""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxgen import config as base
from tests.helpers import xla_flags

WORKER = pathlib.Path(__file__).with_name("act_sharding_worker.py")
WARNING = "Involuntary full rematerialization"

# Every variant on the 2x2x2 mesh (all three axes in use): the CPU recipe's shape, grouped
# key/value heads (3 of them do not divide the tensor axis), the scanned and rematerialized
# stacks, the LSTM, gradient accumulation, bf16, and the conditional models on paired
# batches. The other meshes (fsdp 4; pure data; pure fsdp) compile a few of them, each
# model family at least once. act_sharding_worker.variant says what each name is.
CASES = [f"{v}@2x2x2" for v in ("base", "gqa1", "gqa2", "gqa3", "scan", "scan_remat", "remat",
                                "accum", "bf16", "lstm", "encdec", "encdec_scan", "lstm_attn")]
CASES += ["base@1x4x2", "gqa3@1x4x2", "lstm_bf16@1x4x2", "encdec@1x4x2", "base@8x1x1",
          "lstm@1x8x1"]


@pytest.mark.slow
def test_train_step_compiles_without_full_rematerialization():
  env = {**os.environ, "XLA_FLAGS": xla_flags(8),
         "JAX_PLATFORMS": "cpu"}
  # A persistent-cache hit skips the compile, and with it the warnings.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  proc = subprocess.run([sys.executable, str(WORKER), *CASES], env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0 and "DONE" in proc.stderr, proc.stderr[-3000:]
  found, case = {}, None
  for line in proc.stderr.splitlines():
    if line.startswith("CASE "):
      case = line.split()[1]
    elif WARNING in line:
      found[case] = found.get(case, 0) + 1
  assert not found, f"{WARNING} while compiling: {found}"


def test_constrain_is_identity_without_a_mesh():
  from jaxgen.parallel import activations as activation_sharding
  x = jnp.ones((4, 8))
  assert activation_sharding.constrain(x, ("batch", "embed")) is x
  assert activation_sharding.spec_for(("batch", "embed"), x.shape) is None


def test_specs_follow_the_rules_and_leave_indivisible_dims_replicated():
  from jaxgen.parallel import activations as activation_sharding
  devices = np.asarray(jax.devices()[:8]).reshape(2, 2, 2)
  mesh = Mesh(devices, ("data", "fsdp", "tensor"),
              axis_types=(jax.sharding.AxisType.Auto,) * 3)
  with activation_sharding.use(mesh, base.DEFAULT_LOGICAL_AXIS_RULES):
    spec = activation_sharding.spec_for
    # 'embed' goes over fsdp for weights; the batch has taken fsdp already.
    assert spec(("batch", "length", "embed"), (8, 16, 32)) == P(("data", "fsdp"), None, None)
    assert spec(("batch", "length", "heads", "head_dim"), (8, 16, 4, 8)) == P(
        ("data", "fsdp"), None, "tensor", None)
    assert spec(("batch", "length", "kv_heads", "head_dim"), (8, 16, 3, 8)) == P(
        ("data", "fsdp"), None, None, None)
    y = jax.jit(lambda x: activation_sharding.constrain(x * 2, ("batch", "vocab")))(
        jnp.ones((8, 128)))
    assert y.sharding.spec == P(("data", "fsdp"), "tensor")
  assert activation_sharding.spec_for(("batch",), (8,)) is None  # restored on exit


def test_one_device_mesh_adds_no_constraints():
  from jaxgen.parallel import activations as activation_sharding
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
  with activation_sharding.use(mesh, base.DEFAULT_LOGICAL_AXIS_RULES):
    assert activation_sharding.spec_for(("batch",), (8,)) is None


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
