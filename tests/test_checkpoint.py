"""Checkpoints: exact resume, restore onto another mesh, mismatches refused."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxgen.errors import UserError
from tests.helpers import tiny_transformer_config, write_corpus
from tests.test_train import run


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "verse.txt")


def config(source, steps):
  # decay_steps pins the schedule, so a 10-step run is the first half of a 20-step one.
  cfg = tiny_transformer_config(source, steps=steps, decay_steps=20)
  cfg.checkpoint.every_steps = 5
  return cfg


def last_by_step(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {l["step"]: l["train_loss"] for l in lines if "train_loss" in l}


def saved_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "default")
  return jax.tree.leaves(restored["params"])


def test_resume_continues_bit_for_bit(source, tmp_path):
  run(config(source, 20), tmp_path / "whole")
  run(config(source, 10), tmp_path / "split")
  assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["10", "5"]
  run(config(source, 20), tmp_path / "split")  # same command again: resumes at step 10
  whole, split = last_by_step(tmp_path / "whole"), last_by_step(tmp_path / "split")
  assert sorted(split) == list(range(1, 21))
  assert [split[i] for i in range(11, 21)] == [whole[i] for i in range(11, 21)]
  for a, b in zip(saved_params(tmp_path / "whole", 20), saved_params(tmp_path / "split", 20)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
def test_restore_onto_another_mesh(source, tmp_path):
  run(config(source, 20), tmp_path / "one", (1, 1, 1))
  run(config(source, 10), tmp_path / "moved", (2, 2, 2))
  run(config(source, 20), tmp_path / "moved", (1, 1, 1))
  one, moved = last_by_step(tmp_path / "one"), last_by_step(tmp_path / "moved")
  np.testing.assert_allclose([moved[i] for i in range(11, 21)], [one[i] for i in range(11, 21)],
                             atol=1e-5, rtol=0)


def test_other_corpus_is_refused_and_checkpoints_kept(source, tmp_path):
  run(config(source, 5), tmp_path / "run")
  before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
  other = write_corpus(tmp_path / "other.txt", repeats=5)
  (tmp_path / "other.txt").write_text((tmp_path / "other.txt").read_text() + "XYZ~")
  with pytest.raises(UserError, match="different tokenizer"):
    run(config(other, 10), tmp_path / "run")
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


def test_sigterm_saves_the_current_step_and_exits_cleanly(source, tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "jaxgen", "train", "--config=configs/shakespeare_char_cpu.py",
         f"--config.data.source={source}",
         "--config.train.steps=100000", "--config.train.log_every=5",
         "--config.model.num_layers=1", "--config.model.embed_dim=32", "--config.data.seq_len=32",
         "--config.eval.every_steps=0", "--config.train.compilation_cache_dir=",
         f"--workdir={workdir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", XLA_FLAGS="")
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stdout:
      if line.startswith("step 20/"):
        break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()  # the preemption path failed; do not leave it running
  assert proc.returncode == 0, err
  assert "Traceback" not in err
  stopped = int(out.split("SIGTERM received: stopped at step ")[1].split()[0])
  assert stopped >= 20
  assert (workdir / "checkpoints" / str(stopped)).is_dir()
  steps = [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(steps) == stopped


def test_damaged_newest_checkpoint_is_set_aside_and_the_previous_used(source, tmp_path, capsys):
  run(config(source, 10), tmp_path / "run")
  newest = tmp_path / "run" / "checkpoints" / "10"
  for f in newest.rglob("*"):
    if f.is_file() and f.parent.name == "d":  # the array data files
      f.write_bytes(b"garbage")
  run(config(source, 20), tmp_path / "run")
  assert "checkpoint" in capsys.readouterr().err
  assert (tmp_path / "run" / "checkpoints" / "10.unreadable").is_dir()
  assert (tmp_path / "run" / "checkpoints" / "20").is_dir()
  run(config(source, 20), tmp_path / "whole")
  whole, resumed = last_by_step(tmp_path / "whole"), last_by_step(tmp_path / "run")
  assert [resumed[i] for i in range(6, 21)] == [whole[i] for i in range(6, 21)]


def test_sigkill_then_rerun_gives_the_uninterrupted_losses(source, tmp_path):
  workdir = tmp_path / "killed"
  cmd = [sys.executable, "-m", "jaxgen", "train", "--config=configs/shakespeare_char_cpu.py",
         f"--config.data.source={source}", "--config.train.steps=60",
         "--config.train.decay_steps=60", "--config.train.log_every=5",
         "--config.checkpoint.every_steps=7", "--config.model.num_layers=1",
         "--config.model.embed_dim=32", "--config.data.seq_len=32",
         "--config.eval.every_steps=0", "--config.sample.num_tokens=0",
         "--config.train.compilation_cache_dir=", f"--workdir={workdir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", XLA_FLAGS="")
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if line.startswith("step 25/"):
      break
  proc.kill()  # SIGKILL: no chance to save
  proc.wait()
  subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
  whole = tmp_path / "whole"
  subprocess.run([*cmd[:-1], f"--workdir={whole}"], cwd=repo, env=env, check=True,
                 capture_output=True)
  resumed, reference = last_by_step(workdir), last_by_step(whole)
  assert sorted(resumed) == list(range(1, 61))
  assert resumed == reference  # bit for bit, every step
