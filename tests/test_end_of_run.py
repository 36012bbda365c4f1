"""The end of training: the final checkpoint is complete before the end-of-run
evaluation starts, a Ctrl-C stops that evaluation at once, eval.full_split_max_tokens
caps it, and a stop's message starts a line of its own under the progress bar."""

import io
import json
import os
import re
import signal
import sys

import jax
import orbax.checkpoint as ocp
import pytest

from jaxgen.parallel import mesh as mesh_lib, specs
from jaxgen.train.loop import train_and_evaluate
from tests.helpers import tiny_transformer_config, write_corpus

pytestmark = pytest.mark.slow  # every test here runs for seconds on 2 cores

STEPS = 4
EVAL_ROWS = 2  # eval.batch_size: the validation text's 39 windows make 19 whole-split batches
TRAIN_ROWS = 16


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "verse.txt")


def config(source, **train):
  cfg = tiny_transformer_config(source, **{"steps": STEPS, "warmup_steps": 1, **train})
  cfg.eval.update(every_steps=STEPS, steps=2, batch_size=EVAL_ROWS)
  return cfg


def train(cfg, workdir, monkeypatch, on_batch=lambda rows: None):
  """train_and_evaluate on one device; `on_batch(rows of each batch so far)` runs
  before each batch goes to the device."""
  make_mesh, put_batch, rows = mesh_lib.make_mesh, specs.put_batch, []
  monkeypatch.setattr(mesh_lib, "make_mesh", lambda m, d=None: make_mesh(m, jax.devices()[:1]))

  def put(batch, batch_sharding):
    rows.append(len(batch["inputs"]))
    on_batch(rows)
    return put_batch(batch, batch_sharding)

  monkeypatch.setattr(specs, "put_batch", put)
  return train_and_evaluate(cfg, str(workdir)), rows


def full_split_batches(rows, cfg) -> int:
  """Batches of the whole-split pass: the eval-sized ones after the sampled evaluation's."""
  assert TRAIN_ROWS != EVAL_ROWS
  return rows.count(EVAL_ROWS) - cfg.eval.steps


def records(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_ctrl_c_in_the_full_split_pass_stops_it_with_the_final_checkpoint_complete(
    source, tmp_path, monkeypatch, capsys):
  cfg = config(source)
  workdir, checkpoints, seen = tmp_path / "run", tmp_path / "run" / "checkpoints", {}

  def on_batch(rows):
    if full_split_batches(rows, cfg) == 1:  # the pass's first batch: Ctrl-C
      seen["checkpoints"] = sorted(p.name for p in checkpoints.iterdir())
      if seen["checkpoints"] == [str(STEPS)]:
        seen["step"] = int(ocp.StandardCheckpointer().restore(
            checkpoints / str(STEPS) / "state")["step"])
      os.kill(os.getpid(), signal.SIGINT)

  result, rows = train(cfg, workdir, monkeypatch, on_batch)
  out = capsys.readouterr().out
  # Complete on disk (Orbax renames its temporary folder last) before the pass began.
  assert seen == {"checkpoints": [str(STEPS)], "step": STEPS}, seen
  # Stopped at once: the batch in flight, of 19.
  assert full_split_batches(rows, cfg) == 1, rows
  assert result["stopped_by"] == "SIGINT" and "val_loss_full_split" not in result, result
  assert not [r for r in records(workdir) if "val_loss_full_split" in r]
  said = [l for l in out.splitlines() if "SIGINT" in l]
  assert said == [f"jaxgen: SIGINT received: end-of-run evaluation skipped; the checkpoint "
                  f"of step {STEPS} is complete in {checkpoints.absolute() / str(STEPS)}"], out
  assert "run the same command to resume" not in out, out  # nothing left to resume


def test_full_split_max_tokens_caps_the_pass(source, tmp_path, monkeypatch):
  cfg = config(source)
  cfg.eval.full_split_max_tokens = 3 * EVAL_ROWS * cfg.data.seq_len + 7  # 3 batches
  result, rows = train(cfg, tmp_path / "run", monkeypatch)
  assert full_split_batches(rows, cfg) == 3, rows
  assert result["val_full_split_tokens"] == 3 * EVAL_ROWS * cfg.data.seq_len, result
  full = [r for r in records(tmp_path / "run") if "val_loss_full_split" in r]
  assert len(full) == 1 and full[0]["step"] == STEPS, full
  assert full[0]["val_loss_full_split"] == pytest.approx(result["val_loss_full_split"])


class _Terminal(io.StringIO):
  """stdout and stderr in one, as a terminal shows them."""

  def isatty(self):
    return True


def screen(text: str) -> list[str]:
  """The lines a terminal shows for `text`: a carriage return writes over the line."""
  lines = []
  for raw in re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).split("\n"):
    cells: list[str] = []
    for part in raw.split("\r"):
      cells[:len(part)] = part
    lines.append("".join(cells).rstrip())
  return lines


def test_a_stop_message_starts_a_line_of_its_own_under_the_progress_bar(
    source, tmp_path, monkeypatch):
  terminal = _Terminal()
  monkeypatch.setattr(sys, "stdout", terminal)
  monkeypatch.setattr(sys, "stderr", terminal)
  cfg = tiny_transformer_config(source, steps=8, warmup_steps=1)

  def on_batch(rows):
    if len(rows) == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  result, _ = train(cfg, tmp_path / "run", monkeypatch, on_batch)
  shown = screen(terminal.getvalue())
  assert result["stopped_by"] == "SIGTERM"
  assert "/8 [" in terminal.getvalue()  # a bar was drawn: "  0%|    | 0/8 [00:00<?, ?step/s]"
  said = [l for l in shown if "jaxgen: SIGTERM received: saving step" in l]
  assert len(said) == 1 and said[0].startswith("jaxgen: SIGTERM received: saving step 3;"), shown
  stopped = [l for l in shown if "stopped at step" in l]
  assert len(stopped) == 1 and stopped[0].startswith("jaxgen: stopped at step 3 "), shown
