"""Tests for jaxgen.metrics: files written, throughput and MFU arithmetic, console."""

from __future__ import annotations

import glob
import json
import os
import struct
import time
import types

import numpy as np
import pytest

from jaxgen import metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeClock:
  """A clock that moves only when told to."""

  def __init__(self):
    self.t = 100.0

  def __call__(self) -> float:
    return self.t


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
  fake = FakeClock()
  monkeypatch.setattr(metrics, "_now", fake)
  return fake


def _read_jsonl(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _tb_scalars(workdir) -> dict[str, dict[int, float]]:
  """Reads scalars back from the event files (TFRecord framing, no TensorFlow)."""
  from tensorboardX.proto import event_pb2
  scalars: dict[str, dict[int, float]] = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  return scalars


def _run(workdir, clock, steps=4, step_seconds=0.5, start_step=0, **kwargs):
  """Runs a fake training loop; the first step takes 10 s (compilation)."""
  kwargs.setdefault("total_steps", start_step + steps)
  kwargs.setdefault("tokens_per_step", 1000)
  kwargs.setdefault("progress", False)
  kwargs.setdefault("log_every", 2)
  with metrics.MetricsWriter(workdir, start_step=start_step, **kwargs) as w:
    for step in range(start_step + 1, start_step + steps + 1):
      clock.t += 10.0 if step == start_step + 1 else step_seconds
      w.train(step, {"train_loss": 3.0 - 0.1 * step, "learning_rate": 1e-3,
                     "grad_norm": 0.5})
    w.eval(start_step + steps, {"val_loss": 2.5})
    w.text(start_step + steps, "sample", "ROMEO: hi")
  return w


def test_train_and_eval_lines(tmp_path, clock):
  _run(tmp_path, clock)
  lines = _read_jsonl(tmp_path)
  train, evals = lines[:4], lines[4:]
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  for r in train:
    assert r["train_loss"] == pytest.approx(3.0 - 0.1 * r["step"])
    assert r["learning_rate"] == pytest.approx(1e-3)
    assert r["grad_norm"] == pytest.approx(0.5)
    assert "mfu" not in r
  assert "tokens_per_s" not in train[0]  # compilation step is excluded
  for r in train[1:]:
    assert r["tokens_per_s"] == pytest.approx(1000 / 0.5)
  assert [{k: v for k, v in r.items() if k != "time"} for r in evals] == [
      {"step": 4, "val_loss": 2.5}]


def test_tokens_per_s_counts_skipped_steps(tmp_path, clock):
  w = metrics.MetricsWriter(tmp_path, total_steps=10, tokens_per_step=100,
                            progress=False)
  w.train(1, {"train_loss": 1.0, "learning_rate": 0.1})
  clock.t += 2.0
  w.train(5, {"train_loss": 1.0, "learning_rate": 0.1})  # 4 steps in 2 s
  w.close()
  assert _read_jsonl(tmp_path)[1]["tokens_per_s"] == pytest.approx(200.0)


def test_eval_time_is_not_step_time(tmp_path, clock):
  w = metrics.MetricsWriter(tmp_path, total_steps=10, tokens_per_step=100,
                            progress=False)
  w.train(1, {"train_loss": 1.0, "learning_rate": 0.1})
  clock.t += 1.0
  w.train(2, {"train_loss": 1.0, "learning_rate": 0.1})
  clock.t += 30.0  # evaluation
  w.eval(2, {"val_loss": 1.0})
  clock.t += 1.0
  w.train(3, {"train_loss": 1.0, "learning_rate": 0.1})
  w.close()
  assert _read_jsonl(tmp_path)[3]["tokens_per_s"] == pytest.approx(100.0)


def test_mfu_only_with_flops_and_peak(tmp_path, clock):
  _run(tmp_path / "a", clock, flops_per_token=1e9, peak_flops=1e12)
  for r in _read_jsonl(tmp_path / "a")[1:4]:
    assert r["mfu"] == pytest.approx(r["tokens_per_s"] * 1e9 / 1e12)
    assert r["mfu"] == pytest.approx(2.0)
  _run(tmp_path / "b", clock, flops_per_token=1e9)
  _run(tmp_path / "c", clock, peak_flops=1e12)
  for name in ("b", "c"):
    assert all("mfu" not in r for r in _read_jsonl(tmp_path / name))


def test_non_primary_writes_nothing(tmp_path, clock, capsys):
  workdir = tmp_path / "run"
  _run(workdir, clock, is_primary=False)
  assert not workdir.exists()
  assert capsys.readouterr().out == ""


def test_tensorboard_scalars_every_log_every_and_last(tmp_path, clock):
  _run(tmp_path, clock, steps=5, log_every=2)
  scalars = _tb_scalars(tmp_path)
  assert sorted(scalars["train_loss"]) == [2, 4, 5]
  assert scalars["train_loss"][4] == pytest.approx(2.6)
  assert scalars["tokens_per_s"][4] == pytest.approx(2000.0)
  assert sorted(scalars["val_loss"]) == [5]
  assert "step" not in scalars


def test_loss_png_after_close(tmp_path, clock):
  _run(tmp_path, clock)
  with open(tmp_path / "loss.png", "rb") as f:
    assert f.read(8) == PNG_MAGIC


def test_plain_console_output(tmp_path, clock, capsys):
  _run(tmp_path, clock, steps=4, log_every=2, flops_per_token=1e9, peak_flops=1e12)
  out = capsys.readouterr().out
  assert "step 2/4 | loss 2.8000 | 2,000 tok/s | mfu 200.0% | lr 1.0e-03 | eta 0:00:01" in out
  assert "step 4/4 | loss 2.6000" in out
  assert "step 3/4" not in out
  assert "eval step 4 | val_loss 2.5000" in out
  assert "ROMEO: hi" in out
  assert "done: 4 steps in 11.5 s | final train_loss 2.6000 | best val_loss 2.5000" in out


def test_summary_items_are_printed(tmp_path, clock, capsys):
  w = metrics.MetricsWriter(tmp_path, total_steps=1, tokens_per_step=1, progress=False)
  w.close({"checkpoint": "step_1"})
  w.close()  # a second close does nothing
  out = capsys.readouterr().out
  assert out.count("done:") == 1 and "checkpoint step_1" in out


def test_append_continues_existing_file(tmp_path, clock):
  _run(tmp_path, clock, steps=3)
  _run(tmp_path, clock, steps=3, start_step=3)
  lines = _read_jsonl(tmp_path)
  assert [r["step"] for r in lines if "train_loss" in r] == [1, 2, 3, 4, 5, 6]
  assert [r["step"] for r in lines if "val_loss" in r] == [3, 6]
  assert "tokens_per_s" not in lines[4]  # the resumed run compiles again


def test_plot_loss_curve_tolerates_repeats_and_torn_lines(tmp_path):
  jsonl = tmp_path / "m.jsonl"
  jsonl.write_text(
      '{"step": 1, "train_loss": 2.0}\n{"step": 2, "train_loss": 1.5}\n'
      '{"step": 2, "train_loss": 1.4}\n{"step": 2, "val_loss": 1.6}\n{"step": 3, "tr')
  metrics.plot_loss_curve(jsonl, tmp_path / "l.png")
  assert (tmp_path / "l.png").read_bytes()[:8] == PNG_MAGIC


def test_non_finite_values_are_strict_json(tmp_path, clock):
  w = metrics.MetricsWriter(tmp_path, total_steps=1, tokens_per_step=1, progress=False)
  w.train(1, {"train_loss": float("nan"), "learning_rate": 0.1})
  w.close()
  text = (tmp_path / "metrics.jsonl").read_text()
  assert "NaN" not in text and json.loads(text)["train_loss"] is None


def test_numpy_scalars_are_accepted(tmp_path, clock):

  w = metrics.MetricsWriter(tmp_path, total_steps=1, tokens_per_step=1, progress=False)
  w.train(1, {"train_loss": np.float32(1.5), "learning_rate": np.float64(0.1)})
  w.close()
  assert _read_jsonl(tmp_path)[0]["train_loss"] == 1.5


def test_progress_bar_mode(tmp_path, clock, capsys):
  _run(tmp_path, clock, progress=True)
  captured = capsys.readouterr()
  assert "4/4" in captured.err
  assert "eval step 4 | val_loss 2.5000" in captured.out
  assert len(_read_jsonl(tmp_path)) == 5


def test_flops_per_token():
  # GPT-2 small at T=1024: 6*85e6 = 510,000,000; 12*12*12*64*1024 = 113,246,208.
  assert metrics.flops_per_token(85_000_000, 12, 12, 64, 1024) == 623_246_208
  assert metrics.flops_per_token(1000, 0, 0, 0, 0) == 6000  # no attention (LSTM)


@pytest.mark.parametrize("kind, expected", [
    ("NVIDIA H200", 989e12),
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", None),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5", 459e12),
    ("TPU v5p", 459e12),
    ("TPU v6 lite", 918e12),
    ("cpu", None),
    ("Some New Chip", None),
])
def test_peak_flops(kind, expected):
  assert metrics.peak_flops(types.SimpleNamespace(device_kind=kind)) == expected


def test_smoothed_is_a_centred_moving_average():
  rng = np.random.default_rng(0)
  trend = 3.0 - np.linspace(0, 1, 200)
  values = list(trend + rng.normal(0, 0.3, 200))
  out = metrics.smoothed(values, half_width=10)
  ref = [np.mean(values[max(0, i - 10):i + 11]) for i in range(200)]
  np.testing.assert_allclose(out, ref, rtol=1e-12)
  # Centred: no lag behind the falling trend, and the band narrows several-fold.
  residual = np.array(out[10:-10]) - trend[10:-10]
  assert abs(residual.mean()) < 0.03
  assert np.std(residual) < np.std(np.array(values) - trend) / 3
  assert metrics.smoothed([2.0]) == [2.0] and metrics.smoothed([]) == []


def test_loss_png_draws_the_smoothed_train_loss_over_the_raw_one(tmp_path, monkeypatch):
  import matplotlib.figure  # pylint: disable=import-outside-toplevel
  drawn = {}

  def record(fig, *args, **kwargs):
    drawn.update({line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines})
  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
  losses = [3.0, 2.0, 3.5, 1.5, 2.5, 2.0, 2.2]
  jsonl = tmp_path / "m.jsonl"
  jsonl.write_text("".join(json.dumps({"step": i + 1, "train_loss": v}) + "\n"
                           for i, v in enumerate(losses)) + '{"step": 7, "val_loss": 2.1}\n')
  metrics.plot_loss_curve(jsonl, tmp_path / "l.png")
  assert drawn["train_loss"] == losses
  assert drawn["train_loss (smoothed)"] == pytest.approx(metrics.smoothed(losses))
  assert drawn["val_loss"] == [2.1]


def test_resumed_best_val_loss_counts_evaluations_before_the_resume(tmp_path, clock, capsys):
  jsonl = tmp_path / "metrics.jsonl"
  # Evaluations at 2 (best), 4, and 6: the run resumes from a checkpoint at step 4, so
  # step 6 was never part of the run that continues.
  jsonl.write_text("".join(json.dumps(r) + "\n" for r in [
      {"step": 2, "val_loss": 1.5}, {"step": 4, "val_loss": 2.0}, {"step": 6, "val_loss": 0.5}]))
  w = metrics.MetricsWriter(tmp_path, total_steps=8, start_step=4, tokens_per_step=1,
                            progress=False)
  assert w.best_val_loss == 1.5
  w.eval(6, {"val_loss": 1.8})
  assert w.best_val_loss == 1.5
  w.eval(8, {"val_loss": 1.2})
  assert w.best_val_loss == 1.2
  w.close()
  assert "best val_loss 1.2000" in capsys.readouterr().out
  fresh = metrics.MetricsWriter(tmp_path / "new", total_steps=1, tokens_per_step=1,
                                progress=False)
  assert fresh.best_val_loss is None
  fresh.close()


def test_rows_carry_wall_clock_time_and_rows_without_it_still_read(tmp_path, clock):
  # A row of an older jaxgen, without "time"; the resumed run appends to it.
  (tmp_path / "metrics.jsonl").write_text('{"step": 2, "train_loss": 2.9, "val_loss": 2.7}\n')
  before = time.time()
  _run(tmp_path, clock, steps=2, start_step=2)
  after = time.time()
  rows = _read_jsonl(tmp_path)
  assert "time" not in rows[0] and len(rows) == 4
  assert all(before - 0.01 <= r["time"] <= after + 0.01 for r in rows[1:]), rows
  assert [r["step"] for r in metrics.read_records(tmp_path / "metrics.jsonl")] == [2, 3, 4, 4]
  assert "time" not in _tb_scalars(tmp_path)  # a row's time, not a metric


def test_progress_of_a_long_loop_in_plain_lines_not_in_the_files(tmp_path, clock, capsys):
  w = metrics.MetricsWriter(tmp_path, total_steps=1, tokens_per_step=1, progress=False)
  with w.progress("eval full split @ step 1", total=6) as progress:
    for _ in range(6):
      clock.t += 4.0  # a line every 10 s
      progress.update()
  w.close()
  shown = [l for l in capsys.readouterr().out.splitlines() if l.startswith("eval full")]
  assert shown == ["eval full split @ step 1: 3/6 batches | 12 s | eta 0:00:12",
                   "eval full split @ step 1: 6/6 batches | 24 s"], shown
  assert _read_jsonl(tmp_path) == [] and not _tb_scalars(tmp_path)


def test_progress_bar_of_a_long_loop(tmp_path, clock, capsys, monkeypatch):
  monkeypatch.setattr(metrics, "_BAR_DELAY_S", 0.0)
  w = metrics.MetricsWriter(tmp_path, total_steps=1, tokens_per_step=1, progress=True)
  with w.progress("eval full split @ step 1", total=6) as progress:
    progress.update()
  quiet = metrics.MetricsWriter(tmp_path / "other", total_steps=1, tokens_per_step=1,
                                is_primary=False)
  with quiet.progress("eval full split @ step 1", total=6) as progress:
    progress.update()
  w.close()
  err = capsys.readouterr().err
  assert err.count("eval full split @ step 1:") >= 1 and "/6 [" in err, err


def test_tensorboard_logging_does_not_import_torch(tmp_path):
  """tensorboardX imports torch when it can; that is over a second at every command's start."""
  import importlib.util
  import subprocess
  import sys
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed here, so nothing could import it")
  code = ("import sys; from jaxgen import metrics\n"
          f"with metrics.MetricsWriter({str(tmp_path)!r}, total_steps=1, tokens_per_step=8) as w:\n"
          "  w.train(1, {'train_loss': 1.0})\n"
          "import tensorboardX.writer\n"
          "print('torch' in sys.modules, tensorboardX.writer.numpy_compatible.__name__)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.splitlines()[-1] == "False ndarray", out.stdout + out.stderr
  assert glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
