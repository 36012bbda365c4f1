"""Checkpoints: exact resume, restore onto another mesh, mismatches refused."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxgen.errors import UserError
from jaxgen.train.checkpoint import Checkpointer
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
  restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
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


@pytest.mark.parametrize("mode", ["concat", "pack"])
def test_resume_continues_the_shuffled_data_stream(source, tmp_path, mode):
  """Concat and pack read a shuffled Grain stream: its position is in the checkpoint."""
  def cfg(steps):
    c = config(source, steps)
    c.data.update(text_lines=True, mode=mode)
    return c
  run(cfg(20), tmp_path / "whole")
  run(cfg(10), tmp_path / "split")
  run(cfg(20), tmp_path / "split")
  whole, split = last_by_step(tmp_path / "whole"), last_by_step(tmp_path / "split")
  assert [split[i] for i in range(11, 21)] == [whole[i] for i in range(11, 21)]


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
def test_restore_onto_another_mesh(source, tmp_path):
  run(config(source, 20), tmp_path / "one", (1, 1, 1))
  run(config(source, 10), tmp_path / "down", (2, 2, 2))  # saved on 8 devices ...
  run(config(source, 20), tmp_path / "down", (1, 1, 1))  # ... resumed on 1
  run(config(source, 10), tmp_path / "up", (1, 1, 1))  # and the other way
  run(config(source, 20), tmp_path / "up", (2, 2, 2))
  one = last_by_step(tmp_path / "one")
  for moved in (last_by_step(tmp_path / "down"), last_by_step(tmp_path / "up")):
    np.testing.assert_allclose([moved[i] for i in range(11, 21)],
                               [one[i] for i in range(11, 21)], atol=1e-5, rtol=0)


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


def test_killed_three_times_then_rerun_gives_the_uninterrupted_losses(source, tmp_path):
  """SIGKILL mid-training, in the middle of a save, and right after a resume."""
  workdir = tmp_path / "killed"
  cmd = [sys.executable, "-m", "jaxgen", "train", "--config=configs/shakespeare_char_cpu.py",
         f"--config.data.source={source}", "--config.train.steps=60",
         "--config.train.decay_steps=60", "--config.train.log_every=1",
         "--config.checkpoint.every_steps=7", "--config.model.num_layers=1",
         "--config.model.embed_dim=32", "--config.data.seq_len=32",
         "--config.eval.every_steps=0", "--config.sample.num_tokens=0",
         "--config.train.compilation_cache_dir=", f"--workdir={workdir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", XLA_FLAGS="")
  repo = pathlib.Path(__file__).resolve().parents[1]
  checkpoints = workdir / "checkpoints"

  def start():
    return subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)

  def kill_after_line(prefix, when=lambda: True):
    proc = start()
    try:
      for line in proc.stdout:
        if line.startswith(prefix) and when():
          return
      pytest.fail(f"the run ended before printing {prefix!r}")
    finally:
      proc.kill()
      proc.wait()

  # 1: mid-training, once the save at step 7 is complete.
  kill_after_line("step ", when=lambda: (checkpoints / "7").is_dir())
  kill_after_line("jaxgen: resuming from")  # 2: right after a restore
  # 3: while a save is being written: Orbax writes into a temporary directory
  # and renames it only when complete, so kill as soon as one appears.
  proc = start()
  try:
    deadline = time.monotonic() + 300
    while not any(".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir()):
      assert proc.poll() is None and time.monotonic() < deadline, "no save was seen"
      time.sleep(0.001)
  finally:
    proc.kill()
    proc.wait()
  assert any(".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir())
  done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert "jaxgen: resuming from" in done.stdout
  whole = tmp_path / "whole"
  subprocess.run([*cmd[:-1], f"--workdir={whole}"], cwd=repo, env=env, check=True,
                 capture_output=True)
  resumed, reference = last_by_step(workdir), last_by_step(whole)
  assert sorted(resumed) == list(range(1, 61))
  assert resumed == reference  # bit for bit, every step
  for a, b in zip(saved_params(workdir, 60), saved_params(whole, 60)):
    np.testing.assert_array_equal(a, b)


def test_incomplete_newest_checkpoint_is_ignored(source, tmp_path):
  run(config(source, 10), tmp_path / "run")
  checkpoints = tmp_path / "run" / "checkpoints"
  # What a crash mid-save leaves: a temporary directory with part of the files.
  partial = checkpoints / "15.orbax-checkpoint-tmp-1700000000"
  shutil.copytree(checkpoints / "10", partial)
  for f in sorted(p for p in partial.rglob("*") if p.is_file())[::2]:
    f.unlink()
  run(config(source, 20), tmp_path / "run")
  run(config(source, 20), tmp_path / "whole")
  resumed, whole = last_by_step(tmp_path / "run"), last_by_step(tmp_path / "whole")
  assert [resumed[i] for i in range(11, 21)] == [whole[i] for i in range(11, 21)]


def test_other_model_shape_is_refused_in_one_line_and_checkpoints_kept(source, tmp_path):
  run(config(source, 5), tmp_path / "run")
  before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
  wider = config(source, 10)
  wider.model.embed_dim = 64
  with pytest.raises(UserError, match=r"model\.embed_dim=64 \(saved: 32\)"):
    run(wider, tmp_path / "run")
  longer = config(source, 10)
  longer.train.batch_size = 8
  with pytest.raises(UserError, match=r"train\.batch_size=8 \(saved: 16\)"):
    run(longer, tmp_path / "run")
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before


def _tiny_state(value):
  return {"w": jax.numpy.full((4,), value, jax.numpy.float32)}


@pytest.mark.parametrize("keep_best", [False, True])
def test_keep_newest_and_best(tmp_path, keep_best):
  ckpt = Checkpointer(tmp_path, keep=2, keep_best=keep_best)
  losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: None, 5: 3.0, 6: 6.0}
  for step, loss in losses.items():
    ckpt.save(step, _tiny_state(step), meta={"step": step}, val_loss=loss)
    ckpt.close()  # wait for each save, so deletions happen in order
    ckpt = Checkpointer(tmp_path, keep=2, keep_best=keep_best)
  expected = [2, 5, 6] if keep_best else [5, 6]
  assert ckpt.all_steps() == expected
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
      str(s) for s in expected]
  assert ckpt.best_step() == (2 if keep_best else 5)
  state, step = ckpt.restore(_tiny_state(0.0), step=ckpt.best_step())
  assert float(state["w"][0]) == step and ckpt.meta(step) == {"step": step}
  ckpt.close()


