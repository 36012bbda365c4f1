"""Checkpoints: exact resume, restore onto another mesh, mismatches refused."""

import json
import shutil
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxgen.errors import UserError
from jaxgen.train.checkpoint import Checkpointer
from tests.helpers import tiny_transformer_config, write_corpus
from tests.train_helpers import DEADLINE_S, TRANSFORMER_SPECS, Cli, StateSpy, last_by_step, run


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "verse.txt")


def config(source, steps):
  # decay_steps pins the schedule, so a 10-step run is the first half of a 20-step one.
  cfg = tiny_transformer_config(source, steps=steps, decay_steps=20)
  cfg.checkpoint.every_steps = 5
  return cfg


def saved_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  return jax.tree.leaves(restored["params"])


@pytest.mark.slow
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
@pytest.mark.slow
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
@pytest.mark.slow
def test_restore_onto_another_mesh(source, tmp_path, monkeypatch):
  def spied_run(steps, workdir, mesh, resumed_at=None):
    spy = StateSpy(monkeypatch)
    run(config(source, steps), workdir, mesh)
    # Created sharded, restored onto this mesh's layout, trained in it.
    spy.check(mesh, TRANSFORMER_SPECS)
    assert spy.first_step == (resumed_at or 0)

  run(config(source, 20), tmp_path / "one", (1, 1, 1))
  spied_run(10, tmp_path / "down", (2, 2, 2))  # saved on 8 devices ...
  spied_run(20, tmp_path / "down", (1, 1, 1), resumed_at=10)  # ... resumed on 1
  run(config(source, 10), tmp_path / "up", (1, 1, 1))  # and the other way
  spied_run(20, tmp_path / "up", (2, 2, 2), resumed_at=10)
  one = last_by_step(tmp_path / "one")
  for moved in (last_by_step(tmp_path / "down"), last_by_step(tmp_path / "up")):
    assert sorted(moved) == list(range(1, 21))
    np.testing.assert_allclose([moved[i] for i in range(11, 21)],
                               [one[i] for i in range(11, 21)], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_other_corpus_is_refused_and_checkpoints_kept(source, tmp_path):
  run(config(source, 5), tmp_path / "run")
  before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
  other = write_corpus(tmp_path / "other.txt", repeats=5)
  (tmp_path / "other.txt").write_text((tmp_path / "other.txt").read_text() + "XYZ~")
  with pytest.raises(UserError, match="different tokenizer"):
    run(config(other, 10), tmp_path / "run")
  assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


def tiny_cli_args(source, workdir, *extra):
  return ["--config=configs/shakespeare_char_cpu.py", f"--config.data.source={source}",
          "--config.model.num_layers=1", "--config.model.embed_dim=32",
          "--config.data.seq_len=32", "--config.eval.every_steps=0",
          "--config.sample.num_tokens=0", "--config.train.compilation_cache_dir=",
          *extra, f"--workdir={workdir}"]


def steps_in_metrics(workdir):
  return [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.slow
def test_signal_saves_the_current_step_and_exits_cleanly(source, tmp_path, sig):
  workdir = tmp_path / "run"
  with Cli(tiny_cli_args(source, workdir, "--config.train.steps=100000",
                         "--config.train.log_every=5")) as cli:
    cli.wait_for("step 20/")
    cli.proc.send_signal(sig)
    rc, out, err = cli.finish()
  assert rc == 0, err
  assert "Traceback" not in err and "error" not in err
  saving = int(out.split(f"jaxgen: {sig.name} received: saving step ")[1].split(";")[0])
  stopped = int(out.split("jaxgen: stopped at step ")[1].split()[0])
  assert stopped == saving >= 20
  # Said only once the save is complete: the last line of the run.
  assert out.splitlines()[-1].startswith("jaxgen: stopped at step "), out
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(stopped)]
  assert max(steps_in_metrics(workdir)) == stopped


@pytest.mark.slow
def test_second_signal_during_the_save_leaves_a_resumable_run(source, tmp_path):
  """A second Ctrl-C, or a second SIGTERM, while the stop's save is in flight is left
  to the default handler (so a stuck save can be interrupted): the run ends, maybe
  without that save. No checkpoint is left damaged, at most that one save is lost,
  and the next run resumes from the newest complete checkpoint."""
  workdir = tmp_path / "run"
  checkpoints = workdir / "checkpoints"
  args = ["--config.train.log_every=1", "--config.checkpoint.every_steps=5",
          "--config.checkpoint.keep=10"]

  def newest_complete(stopped):
    assert not list(checkpoints.glob("*.unreadable"))
    complete = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()]
    # The stop's save, or else the periodic one before it, is complete.
    assert max(complete) >= stopped - (stopped % 5 or 5), (stopped, complete)
    return max(complete)

  def interrupt_twice(sig, after, resumes_from=None):
    with Cli(tiny_cli_args(source, workdir, "--config.train.steps=100000", *args)) as cli:
      if resumes_from is not None:
        line = cli.wait_for("jaxgen: resuming from ")
        assert line.split()[3] == str(checkpoints / str(resumes_from)), line
      cli.wait_for(after)
      cli.proc.send_signal(sig)
      # Printed once the stop's save has started, before it is waited for: the
      # second signal lands while that save is in flight.
      line = cli.wait_for(f"jaxgen: {sig.name} received: saving step ")
      cli.proc.send_signal(sig)
      rc, _, err = cli.finish()
    return int(line.split("saving step ")[1].split(";")[0]), rc, err

  stopped, rc, interrupted_err = interrupt_twice(signal.SIGINT, "step 12/")
  assert rc in (0, 130), interrupted_err  # done, or KeyboardInterrupt: "interrupted"
  assert "Traceback" not in interrupted_err, interrupted_err
  if rc == 130:
    assert [l for l in interrupted_err.splitlines() if l.strip()] == [
        "jaxgen: error: interrupted; an unfinished checkpoint is not used: the same command "
        "resumes from the newest complete one"], interrupted_err
  resumed_from = newest_complete(stopped)
  stopped, rc, err = interrupt_twice(signal.SIGTERM, f"step {resumed_from + 7}/",
                                     resumes_from=resumed_from)
  assert rc in (0, -signal.SIGTERM), err  # SIGTERM's default handler ends the process
  assert "Traceback" not in err, err
  resumed_from = newest_complete(stopped)

  with Cli(tiny_cli_args(source, workdir, f"--config.train.steps={resumed_from + 3}",
                         *args)) as cli:
    rc, out, err = cli.finish()
  assert rc == 0, err
  assert f"jaxgen: resuming from {checkpoints / str(resumed_from)} " in out
  assert "warning" not in err and "cannot be read" not in err, err
  assert not list(checkpoints.glob("*.unreadable"))
  assert (checkpoints / str(resumed_from + 3)).is_dir()
  assert steps_in_metrics(workdir)[-1] == resumed_from + 3


@pytest.mark.slow
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


@pytest.mark.slow
def test_killed_three_times_then_rerun_gives_the_uninterrupted_losses(source, tmp_path):
  """SIGKILL mid-training, in the middle of a save, and right after a resume."""
  workdir = tmp_path / "killed"
  args = tiny_cli_args(source, workdir, "--config.train.steps=60",
                       "--config.train.decay_steps=60", "--config.train.log_every=1",
                       "--config.checkpoint.every_steps=7")
  checkpoints = workdir / "checkpoints"

  def kill_after_line(prefix, when=lambda: True):
    with Cli(args) as cli:  # killed on leaving
      while True:
        cli.wait_for(prefix)
        if when():
          return

  # 1: mid-training, once the save at step 7 is complete.
  kill_after_line("step ", when=lambda: (checkpoints / "7").is_dir())
  kill_after_line("jaxgen: resuming from")  # 2: right after a restore
  # 3: while a save is being written: Orbax writes into a temporary directory
  # and renames it only when complete, so kill as soon as one appears.
  with Cli(args) as cli:
    deadline = time.monotonic() + DEADLINE_S
    while not any(".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir()):
      assert cli.proc.poll() is None and time.monotonic() < deadline, "no save was seen"
      time.sleep(0.001)
    cli.proc.kill()
  assert any(".orbax-checkpoint-tmp" in p.name for p in checkpoints.iterdir())
  with Cli(args) as cli:
    rc, out, err = cli.finish()
  assert rc == 0, err
  assert "jaxgen: resuming from" in out
  whole = tmp_path / "whole"
  with Cli([*args[:-1], f"--workdir={whole}"]) as cli:
    assert cli.finish()[0] == 0
  resumed, reference = last_by_step(workdir), last_by_step(whole)
  assert sorted(resumed) == list(range(1, 61))
  assert resumed == reference  # bit for bit, every step
  for a, b in zip(saved_params(workdir, 60), saved_params(whole, 60)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_incomplete_newest_checkpoint_is_ignored(source, tmp_path, capsys):
  run(config(source, 10), tmp_path / "run")
  checkpoints = tmp_path / "run" / "checkpoints"
  # What a crash mid-save leaves: a temporary directory with part of the files.
  partial = checkpoints / "15.orbax-checkpoint-tmp-1700000000"
  shutil.copytree(checkpoints / "10", partial)
  for f in sorted(p for p in partial.rglob("*") if p.is_file())[::2]:
    f.unlink()
  left = {p.relative_to(partial): (p.stat().st_mtime_ns, p.is_file() and p.read_bytes())
          for p in partial.rglob("*")}
  capsys.readouterr()
  run(config(source, 20), tmp_path / "run")
  out, err = capsys.readouterr()
  # Never tried: resumed from 10 at once, no warning, nothing set aside, the partial
  # save left exactly as it was (for a person to inspect or delete).
  assert f"jaxgen: resuming from {checkpoints / '10'} " in out
  assert "warning" not in err and "cannot be read" not in err and "15" not in err, err
  assert not list(checkpoints.glob("*.unreadable"))
  assert {p.relative_to(partial): (p.stat().st_mtime_ns, p.is_file() and p.read_bytes())
          for p in partial.rglob("*")} == left
  assert (checkpoints / "15").is_dir() and (checkpoints / "20").is_dir()
  run(config(source, 20), tmp_path / "whole")
  resumed, whole = last_by_step(tmp_path / "run"), last_by_step(tmp_path / "whole")
  assert [resumed[i] for i in range(11, 21)] == [whole[i] for i in range(11, 21)]


@pytest.mark.slow
def test_other_model_shape_is_refused_in_one_line_and_checkpoints_kept(source, tmp_path):
  run(config(source, 5), tmp_path / "run")
  before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
  wider = config(source, 10)
  wider.model.embed_dim = 64
  with pytest.raises(UserError, match=r"model\.embed_dim=64 \(saved: 32\)") as err:
    run(wider, tmp_path / "run")
  assert "\n" not in str(err.value)
  longer = config(source, 10)
  longer.train.batch_size = 8
  with pytest.raises(UserError, match=r"train\.batch_size=8 \(saved: 16\)") as err:
    run(longer, tmp_path / "run")
  assert "\n" not in str(err.value)
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


