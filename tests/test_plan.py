"""`jaxgen plan`: per-device bytes against counts made by hand from the logical axis
rules, the JSON and its agreement with the compiler, every launch problem as one
line, and a step too big for its chip.

Compiling is what costs here (5-10 s a model on two cores), so the byte counts
are checked in process without compiling, and only two commands compile: GPT-2
scanned (the same parameters as unscanned, one compiled block) and the 1B
Llama recipe as it stands.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import pytest

from jaxgen import chips
from jaxgen.train import plan

REPO = pathlib.Path(__file__).resolve().parents[1]

# GPT-2 small as configs/gpt2_124m.py builds it (nanoGPT, no biases, tied head).
V, T, D, F, L = 50304, 1024, 768, 3072, 12
GPT2_PARAMS = 124_373_760
# Each parameter group: (logical axes, parameters per instance, instances).
GPT2_GROUPS = {
    "embed.table": (("vocab", "embed"), V * D, 1),
    "pos_embed": ((None, "embed"), T * D, 1),
    "attn.wq": (("embed", "heads", "head_dim"), D * D, L),
    "attn.wk": (("embed", "kv_heads", "head_dim"), D * D, L),
    "attn.wv": (("embed", "kv_heads", "head_dim"), D * D, L),
    "attn.wo": (("heads", "head_dim", "embed"), D * D, L),
    "mlp.wi": (("embed", "mlp"), D * F, L),
    "mlp.wo": (("mlp", "embed"), F * D, L),
    "norm scales": (("embed",), D, 2 * L + 1),
}
# The default rules, written out: embed over fsdp; vocab, heads, kv heads and the
# MLP's hidden units over tensor; everything else replicated. 12 heads, 768, 3072
# and 50304 all divide by 2 and 8, so nothing falls back to replication here.
RULES = {"embed": "fsdp", "vocab": "tensor", "heads": "tensor", "kv_heads": "tensor",
         "mlp": "tensor"}
ADAM_COUNTERS = 2 * 4  # int32 step counts of scale_by_adam and the schedule, replicated


def gpt2_bytes_per_device(mesh: dict[str, int]) -> int:
  """fp32 parameter bytes on one device: each group divided by the sizes of the
  mesh axes its logical axes map to."""
  assert sum(n * k for _, n, k in GPT2_GROUPS.values()) == GPT2_PARAMS
  total = 0
  for axes, n, k in GPT2_GROUPS.values():
    ways = 1
    for axis in axes:
      ways *= mesh[RULES[axis]] if axis in RULES else 1
    assert (n * 4) % ways == 0
    total += k * n * 4 // ways
  return total


def load(name: str):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("mesh", [(1, 8, 1), (2, 2, 2)], ids=["1x8x1", "2x2x2"])
def test_gpt2_bytes_per_device_match_the_hand_count(mesh):
  cfg = load("gpt2_124m")
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = mesh
  report = plan.plan(cfg, jax.devices()[:8], chip=chips.BY_NAME["h200"], compile_step=False)
  shape = dict(zip(("data", "fsdp", "tensor"), mesh))
  params = gpt2_bytes_per_device(shape)
  assert report["errors"] == [] and report["warnings"] == []
  assert report["params"] == GPT2_PARAMS and report["mesh"] == shape
  assert report["per_device_bytes"]["params"] == params
  assert report["per_device_bytes"]["optimizer"] == 2 * params + ADAM_COUNTERS  # AdamW mu, nu
  if mesh == (1, 8, 1):
    assert params == GPT2_PARAMS * 4 // 8  # every parameter has an embed axis
  groups = {g["name"]: g for g in report["parameter_groups"]}
  assert groups["blocks.*.attn.wq"]["count"] == L
  want = ["fsdp", "tensor", None] if mesh == (2, 2, 2) else ["fsdp", None, None]
  assert groups["blocks.*.attn.wq"]["mesh_axes"] == want
  # 16 x 1024 tokens at 6N (N without the position table) + 12 L H Q T.
  per_token = 6 * (GPT2_PARAMS - T * D) + 12 * L * 12 * 64 * T
  assert report["flops_per_token"] == per_token
  assert report["step_time_s"] == pytest.approx(16 * 1024 * per_token / (0.4 * 989e12 * 8))


def test_heads_that_do_not_divide_the_tensor_axis_are_a_warning():
  cfg = load("gpt2_124m")
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, 1, 8
  report = plan.plan(cfg, jax.devices()[:8], compile_step=False)
  assert report["errors"] == []
  heads = [w for w in report["warnings"] if "'heads' axis (size 12 = model.num_heads)" in w]
  assert len(heads) == 1 and "mesh.tensor=8" in heads[0], report["warnings"]
  assert "blocks.*.attn.wq" in heads[0] and "blocks.*.attn.wo" in heads[0]
  assert any("'kv_heads' axis" in w for w in report["warnings"])
  # Replicated, so each device holds all of the attention weights.
  wq = next(g for g in report["parameter_groups"] if g["name"] == "blocks.*.attn.wq")
  assert wq["mesh_axes"] == [None, None, None] and wq["bytes_per_device"] == L * D * D * 4


@pytest.mark.slow
def test_json_agrees_with_the_hand_count_and_the_compiler():
  result = jaxgen_plan("--config=configs/gpt2_124m.py", "--devices=8", "--chip=h200", "--json",
                       "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
                       "--config.model.scan_layers=True", "--config.data.seq_len=128")
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""
  report = json.loads(result.stdout)
  params = gpt2_bytes_per_device({"data": 2, "fsdp": 2, "tensor": 2})
  per = report["per_device_bytes"]
  assert report["params"] == GPT2_PARAMS and report["devices"] == 8
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert per["params"] == params and per["optimizer"] == 2 * params + ADAM_COUNTERS
  # The compiler's own count of one device's arguments: the state as we shard it,
  # plus 4 of the 16 rows of inputs and targets, the step and the RNG key.
  batch = 2 * (16 // 4) * 128 * 4
  assert report["compiler_memory"]["arguments"] == per["params"] + per["optimizer"] + batch + 4 + 8
  assert per["temporaries"] > 0
  assert per["total"] == per["params"] + per["optimizer"] + per["other"] + per["temporaries"]
  assert report["fits"] is True and report["flops_per_token"] > 6 * GPT2_PARAMS * 0.99


@pytest.mark.slow
def test_every_launch_problem_is_one_line():
  # 3 x 1 x 1 is not 8 devices, and 10 rows split neither 3 ways nor, for eval, 3 ways.
  result = jaxgen_plan("--config=configs/gpt2_124m.py", "--devices=8", "--config.mesh.data=3",
                       "--config.mesh.fsdp=1", "--config.mesh.tensor=1",
                       "--config.train.batch_size=10")
  assert result.returncode == 1
  lines = result.stderr.splitlines()
  assert len(lines) == 3 and all(l.startswith("jaxgen: error: ") for l in lines), lines
  assert "data=3" in lines[0] and "8 are available" in lines[0]
  assert "train.batch_size=10" in lines[1] and "data-parallel size 3" in lines[1]
  assert "eval.batch_size=10" in lines[2]
  assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_llama_1b_fits_one_h200_but_not_one_tpu_v5e():
  """The recipe as it stands compiles for one device; the same step is too big for
  a 16 GiB TPU v5e, which exits 1 with one error line and the plan on stdout."""
  result = jaxgen_plan("--config=configs/llama_1b.py", "--devices=1", "--chip=tpu_v5e",
                       "--json")
  assert result.returncode == 1
  report = json.loads(result.stdout)
  # XLA's own C++ warnings (e.g. slow constant folding on a loaded machine) aside.
  lines = [line for line in result.stderr.splitlines() if not re.match(r"[IWE]\d{4} ", line)]
  assert len(lines) == 1 and lines[0].startswith("jaxgen: error: the train step needs "), lines
  assert "16 GiB of one tpu_v5e" in lines[0]
  assert report["fits"] is False and report["errors"] == [lines[0][len("jaxgen: error: "):]]
  assert 1.0e9 <= report["params"] <= 1.3e9
  per = report["per_device_bytes"]
  assert per["params"] == report["params"] * 4 and per["total"] > 16 * 2**30
  assert per["total"] < chips.BY_NAME["h200"].memory_bytes  # what one h200 would hold


def test_text_plan_names_every_part(tmp_path):
  report = plan.plan(load("gpt2_124m"), jax.devices()[:1], chip=chips.BY_NAME["h100"],
                     compile_step=False)
  text = plan.format_text(report, "configs/gpt2_124m.py")
  for needle in ("on 1 x h100", "124,373,760 parameters", "per token", "data=1 fsdp=1 tensor=1",
                 "embed.table", "(vocab, embed) -> (-, -)", "parameters", "497 MB",
                 "optimizer", "995 MB", "at 40% MFU"):
    assert needle in text, (needle, text)


def jaxgen_plan(*args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  return subprocess.run([sys.executable, "-m", "jaxgen", "plan", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=240, check=False)
