"""Whole `jaxgen train` runs on 8 host devices finish: exit 0, final checkpoint, full split.

No earlier test evaluated on a mesh: the in-process mesh tests in
test_train.py turn evaluation off, and the command-line tests that use 8
devices all fail before training. So an evaluation that queued every batch
before fetching any went unseen, while every real multi-device CPU run
aborted at its very end ("Termination timeout for all reduce"). Here the real
command runs each loop that dispatches device work (training, evaluation, the
whole-split pass of ~100 batches, the end-of-run sample over several context
windows) on two meshes. Evaluation runs only at the last step, as with
`eval.every_steps` beyond the run, the case that aborted every time.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import write_corpus, xla_flags

pytestmark = pytest.mark.slow  # whole runs of the command

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("corpus") / "verse.txt"
  write_corpus(path, repeats=1000)  # 220 KB; half of it validates: ~100 batches of 16x64
  return path


# Pure data parallelism, the common case, and every axis at once (fsdp and tensor as well);
# tests/test_train.py's in-process mesh tests also train on 1x4x2.
@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 2, 2)], ids=lambda m: "x".join(map(str, m)))
def test_cli_run_on_a_mesh_finishes(mesh, corpus, tmp_path):
  data, fsdp, tensor = mesh
  wd = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(8))
  result = subprocess.run(
      [sys.executable, "-m", "jaxgen", "train", "--config=configs/shakespeare_char_cpu.py",
       f"--workdir={wd}", f"--config.data.source=text:{corpus}",
       "--config.data.val_fraction=0.5", "--config.train.steps=12",
       "--config.train.batch_size=16", "--config.train.log_every=4",
       "--config.eval.every_steps=1000", "--config.eval.steps=20",
       "--config.checkpoint.every_steps=6", "--config.sample.num_tokens=40",
       "--config.train.compilation_cache_dir=", f"--config.mesh.data={data}",
       f"--config.mesh.fsdp={fsdp}", f"--config.mesh.tensor={tensor}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert f"mesh {{'data': {data}, 'fsdp': {fsdp}, 'tensor': {tensor}}}" in result.stdout
  assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["12", "6"]
  records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  full = [r for r in records if "val_loss_full_split" in r]
  assert len(full) == 1 and full[0]["step"] == 12, records
  assert 0 < full[0]["val_loss_full_split"] < 10
  assert [r["step"] for r in records if "val_loss" in r] == [12]
