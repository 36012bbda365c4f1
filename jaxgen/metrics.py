"""Training metrics: console progress, metrics.jsonl, TensorBoard, loss curve, MFU.

`MetricsWriter` is the one sink the training loop reports to. Only the primary
process writes anything; the others get a writer whose methods do nothing, so
the loop needs no `if process_index == 0` of its own.

tensorboardX, tqdm and matplotlib are imported lazily so that `flops_per_token`
and `peak_flops` work on machines (benchmark images) that lack them.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import os
import sys
import time
from typing import Any

from jaxgen import chips
from jaxgen.messages import count

# Monotonic clock; a module attribute so tests can substitute a fake one.
_now = time.perf_counter
# Wall clock (Unix seconds) of each metrics.jsonl row, "time".
_wall = time.time
# A long loop's (an evaluation's) console progress: a tqdm bar shown after this
# many seconds, or without a bar a plain line every _PROGRESS_LINE_S seconds.
_BAR_DELAY_S = 2.0
_PROGRESS_LINE_S = 10.0

class MetricsWriter:
  """Writes training/eval metrics to the console, metrics.jsonl and TensorBoard.

  Files under `workdir`: `metrics.jsonl` (one JSON object per train/eval call,
  appended so a resumed run continues it; a resumed run may repeat steps it had
  logged after its last checkpoint, and readers should keep the last line per
  step; each row's "time" is when it was written, in Unix seconds, absent from
  rows of older jaxgens), `tensorboard/` (event files) and `loss.png` (written
  by `close`).

  Throughput excludes the first `train` call (compilation) and the time spent
  between `eval`/`text` calls and the next `train` call (evaluation, sampling).
  """

  def __init__(
      self,
      workdir: str | os.PathLike,
      *,
      total_steps: int,
      start_step: int = 0,
      tokens_per_step: int,
      flops_per_token: float | None = None,
      peak_flops: float | None = None,
      log_every: int = 50,
      is_primary: bool = True,
      progress: bool | None = None,
  ):
    self._enabled = is_primary
    if not is_primary:
      return
    self._workdir = os.fspath(workdir)
    self._total_steps = total_steps
    self._start_step = start_step
    self._tokens_per_step = tokens_per_step
    self._flops_per_token = flops_per_token
    self._peak_flops = peak_flops
    self._log_every = max(1, log_every)
    self._t_start = _now()
    self._t_prev: float | None = None  # time of the previous train call
    self._step_prev = start_step
    # (steps, seconds) of recent train calls, for the smoothed console rate.
    self._recent = collections.deque(maxlen=self._log_every)
    self._measured_steps = 0
    self._measured_time = 0.0
    self._last_train: dict[str, Any] = {}
    self._closed = False

    os.makedirs(self._workdir, exist_ok=True)
    self._jsonl_path = os.path.join(self._workdir, "metrics.jsonl")
    # A resumed run's best includes the evaluations logged up to where it resumed.
    earlier = [r["val_loss"] for r in read_records(self._jsonl_path)
               if r["step"] <= start_step and _is_number(r.get("val_loss"))
               and math.isfinite(r["val_loss"])] if start_step else []
    self._best_val: float | None = min(earlier) if earlier else None
    self._jsonl = open(self._jsonl_path, "a", encoding="utf-8")
    self._tb = _summary_writer_class()(os.path.join(self._workdir, "tensorboard"))
    if progress is None:
      progress = sys.stderr.isatty()
    self._bar = None
    if progress:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self._bar = tqdm(
          total=total_steps, initial=start_step, unit="step",
          dynamic_ncols=True, file=sys.stderr)

  def train(self, step: int, metrics: dict[str, float]) -> None:
    """Records the metrics of train step `step` (counted from 1)."""
    if not self._enabled:
      return
    now = _now()
    record: dict[str, Any] = {"step": step}
    for key in ("train_loss", "learning_rate"):
      if key in metrics:
        record[key] = _scalar(metrics[key])
    steps = step - self._step_prev
    if self._t_prev is not None and steps > 0 and now > self._t_prev:
      dt = now - self._t_prev
      self._recent.append((steps, dt))
      self._measured_steps += steps
      self._measured_time += dt
      record["tokens_per_s"] = self._tokens_per_step * steps / dt
      mfu = self._mfu(record["tokens_per_s"])
      if mfu is not None:
        record["mfu"] = mfu
    record.update(
        (k, _scalar(v)) for k, v in metrics.items() if k not in record)
    self._t_prev, self._step_prev = now, step
    self._last_train = record
    self._write_json(record)

    last = step >= self._total_steps
    smoothed = self._smoothed_tokens_per_s()
    if last or step % self._log_every == 0:
      tb_record = dict(record)
      if smoothed is not None:  # one sampled step's rate is too noisy to plot
        tb_record["tokens_per_s"] = smoothed
        mfu = self._mfu(smoothed)
        if mfu is not None:
          tb_record["mfu"] = mfu
      self._write_tb(step, tb_record)
    if self._bar is not None:
      self._bar.set_postfix_str(self._describe(record, smoothed), refresh=False)
      self._bar.update(max(0, step - self._bar.n))
    elif last or step % self._log_every == 0:
      line = f"step {step}/{self._total_steps} | {self._describe(record, smoothed)}"
      if smoothed is not None:
        eta = (self._total_steps - step) * self._tokens_per_step / smoothed
        line += f" | eta {datetime.timedelta(seconds=round(max(0.0, eta)))}"
      self._print(line)

  def eval(self, step: int, metrics: dict[str, float]) -> None:
    """Records evaluation metrics (at least `val_loss`) after train step `step`."""
    if not self._enabled:
      return
    record: dict[str, Any] = {"step": step}
    record.update((k, _scalar(v)) for k, v in metrics.items() if k != "step")
    val = record.get("val_loss")
    if _is_number(val) and math.isfinite(val):
      self._best_val = val if self._best_val is None else min(self._best_val, val)
    self._write_json(record)
    self._write_tb(step, record)
    parts = [f"{k} {_fmt(v)}" for k, v in record.items() if k != "step"]
    self._print(" | ".join([f"eval step {step}"] + parts))
    self._pause()

  def text(self, step: int, tag: str, text: str) -> None:
    """Records a generated text sample under `tag`."""
    if not self._enabled:
      return
    self._tb.add_text(tag, text, step)
    self._print(f"[{tag} @ step {step}]\n{text}")
    self._pause()

  def message(self, line: str) -> None:
    """Prints `line` to stdout on a line of its own, above the progress bar if
    there is one (a plain print would land on the bar's line)."""
    if self._enabled:
      self._print(line)

  def progress(self, what: str, total: int | None = None, unit: str = "batch") -> Progress:
    """Console progress of a long loop (an evaluation) of at most `total` items
    (None: not known); `update()` after each item, `close()` at the end.

    A tqdm bar below the training bar when the console shows one, else a plain
    line every _PROGRESS_LINE_S seconds; nothing for a short loop, nothing in
    metrics.jsonl or TensorBoard, nothing on other processes.
    """
    return Progress(self if self._enabled else None, what, total, unit)

  def close(self, summary: dict[str, Any] | None = None, *, finished: bool = True) -> None:
    """Prints a summary line (not for a run that failed: it did not finish),
    closes files and writes WORKDIR/loss.png."""
    if not self._enabled or self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    self._jsonl.close()
    self._tb.close()
    steps = self._step_prev - self._start_step
    parts = [f"done: {count(steps, 'step')} in {_now() - self._t_start:.1f} s"]
    loss = self._last_train.get("train_loss")
    if loss is not None:
      parts.append(f"final train_loss {_fmt(loss)}")
    if self._best_val is not None:
      parts.append(f"best val_loss {_fmt(self._best_val)}")
    if self._measured_time > 0:
      rate = self._tokens_per_step * self._measured_steps / self._measured_time
      parts.append(f"{rate:,.0f} tok/s")
      mfu = self._mfu(rate)
      if mfu is not None:
        parts.append(f"mfu {mfu:.1%}")
    parts += [f"{k} {_fmt(v)}" for k, v in (summary or {}).items()]
    if finished:
      self._print(" | ".join(parts))
    try:
      plot_loss_curve(self._jsonl_path, os.path.join(self._workdir, "loss.png"))
    except ImportError as e:  # a plot is not worth failing a finished run
      self._print(f"loss.png not written: {e}")

  @property
  def best_val_loss(self) -> float | None:
    """The lowest validation loss of this run so far (None before any, and on
    processes other than the primary)."""
    return self._best_val if self._enabled else None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _mfu(self, tokens_per_s: float) -> float | None:
    if not self._flops_per_token or not self._peak_flops:
      return None
    return tokens_per_s * self._flops_per_token / self._peak_flops

  def _smoothed_tokens_per_s(self) -> float | None:
    seconds = sum(dt for _, dt in self._recent)
    if seconds <= 0:
      return None
    return self._tokens_per_step * sum(n for n, _ in self._recent) / seconds

  def _describe(self, record: dict[str, Any], tokens_per_s: float | None) -> str:
    parts = []
    if "train_loss" in record:
      parts.append(f"loss {_fmt(record['train_loss'])}")
    if tokens_per_s is not None:
      parts.append(f"{tokens_per_s:,.0f} tok/s")
      mfu = self._mfu(tokens_per_s)
      if mfu is not None:
        parts.append(f"mfu {mfu:.1%}")
    lr = record.get("learning_rate")
    if _is_number(lr):
      parts.append(f"lr {lr:.1e}")
    return " | ".join(parts)

  def _pause(self) -> None:
    # Whatever ran since the last train call (eval, sampling) is not step time.
    if self._t_prev is not None:
      self._t_prev = _now()

  def _write_json(self, record: dict[str, Any]) -> None:
    # Strict JSON (null, not NaN) so that jq and other tools can read it.
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in record.items()}
    clean = {"step": clean.pop("step"), "time": round(_wall(), 3), **clean}
    self._jsonl.write(json.dumps(clean, default=str) + "\n")
    self._jsonl.flush()

  def _write_tb(self, step: int, record: dict[str, Any]) -> None:
    for key, value in record.items():
      if key != "step" and _is_number(value):
        self._tb.add_scalar(key, value, step)
    self._tb.flush()

  def _print(self, line: str) -> None:
    if self._bar is not None:
      # The bars are cleared, the line printed (and flushed: stdout may be a
      # pipe while the bars are on a terminal) and the bars drawn again below it.
      with self._bar.external_write_mode(file=sys.stdout):
        print(line, flush=True)
    else:
      print(line, flush=True)


class Progress:
  """What `MetricsWriter.progress` returns; a no-op without a writer."""

  def __init__(self, writer: MetricsWriter | None, what: str, total: int | None, unit: str):
    self._writer, self._what, self._total, self._unit = writer, what, total, unit
    self._done = 0
    self._t_start = _now()
    self._next_line = self._t_start + _PROGRESS_LINE_S
    self._bar = None
    if writer is not None and writer._bar is not None:  # pylint: disable=protected-access
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self._bar = tqdm(total=total, desc=what, unit=unit, leave=False, dynamic_ncols=True,
                       file=sys.stderr, delay=_BAR_DELAY_S)

  def update(self, n: int = 1) -> None:
    self._done += n
    if self._bar is not None:
      self._bar.update(n)
    elif self._writer is not None and (now := _now()) >= self._next_line:
      self._next_line = now + _PROGRESS_LINE_S
      done = f"{self._done}/{self._total}" if self._total else f"{self._done}"
      units = self._unit + ("es" if self._unit.endswith(("ch", "s", "x")) else "s")
      line = f"{self._what}: {done} {units} | {now - self._t_start:.0f} s"
      if self._total and self._done < self._total:
        eta = (now - self._t_start) * (self._total - self._done) / self._done
        line += f" | eta {datetime.timedelta(seconds=round(eta))}"
      self._writer._print(line)  # pylint: disable=protected-access

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> Progress:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def plot_loss_curve(jsonl_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
  """Draws train_loss and val_loss against step from a metrics.jsonl file.

  Where a step appears more than once (a resumed run repeating steps it had
  logged after its last checkpoint) the last value wins.
  """
  series: dict[str, dict[int, float]] = {"train_loss": {}, "val_loss": {}}
  for record in read_records(jsonl_path):
    for key, points in series.items():
      value = record.get(key)
      if _is_number(value):
        points[record["step"]] = float(value)

  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(8, 5))
  try:
    train = series["train_loss"]
    if train:
      steps = sorted(train)
      values = [train[s] for s in steps]
      # On small batches the raw curve is a wide band: draw it faint, with
      # its smoothed trend on top.
      raw = ax.plot(steps, values, alpha=0.3, linewidth=0.8, label="train_loss")[0]
      ax.plot(steps, smoothed(values), color=raw.get_color(), linewidth=1.8,
              label="train_loss (smoothed)")
    val = series["val_loss"]
    if val:
      steps = sorted(val)
      ax.plot(steps, [val[s] for s in steps], marker="o", label="val_loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if any(series.values()):
      ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
  finally:
    plt.close(fig)


def read_records(jsonl_path: str | os.PathLike):
  """The records of a metrics.jsonl with an integer "step", in file order; lines a
  killed process cut short are skipped, and a missing file has none."""
  try:
    f = open(jsonl_path, encoding="utf-8")
  except FileNotFoundError:
    return
  with f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict) and _is_number(record.get("step")):
        yield {**record, "step": int(record["step"])}


def smoothed(values: list[float], half_width: int | None = None) -> list[float]:
  """Centred moving average: point i is the mean of values[i - h : i + h + 1],
  the window cut short at the ends.

  Centred rather than trailing, so the trend does not lag behind a falling
  loss. `h` defaults to 1% of the points (at least 2).
  """
  n = len(values)
  h = half_width if half_width is not None else max(2, n // 100)
  sums = [0.0]
  for v in values:
    sums.append(sums[-1] + v)
  out = []
  for i in range(n):
    lo, hi = max(0, i - h), min(n, i + h + 1)
    out.append((sums[hi] - sums[lo]) / (hi - lo))
  return out


def flops_per_token(
    num_params: int, num_layers: int, num_heads: int, head_dim: int, seq_len: int
) -> float:
  """Training FLOPs per token: 6·N + 12·L·H·Q·T (PaLM appendix B, nanoGPT).

  6·N covers the forward and backward matmuls with the weights; 12·L·H·Q·T the
  attention scores and weighted sum. `num_params` is N as the caller counts it:
  normally without embedding lookup tables (position embeddings, and the token
  embedding unless it is tied to the output projection), since a lookup does no
  matmul. For a model without attention (LSTM) pass num_layers=0.
  """
  return 6.0 * num_params + 12.0 * num_layers * num_heads * head_dim * seq_len


def peak_flops(device: Any) -> float | None:
  """Dense bf16 peak FLOP/s of one chip, from `device.device_kind`; None if unknown."""
  chip = chips.chip_of(device)
  return chip.peak_flops if chip is not None else None


def _scalar(value: Any) -> Any:
  """Python int/float for numeric values (numpy/jax scalars too), else as is."""
  if hasattr(value, "item") and getattr(value, "size", 1) == 1:
    value = value.item()  # also waits for a device value; callers pass fetched ones
  return value


def _fmt(value: Any) -> str:
  if isinstance(value, float) and math.isfinite(value):
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
  return str(value)


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch.

  tensorboardX imports torch whenever it is installed, only so that it can also
  take torch tensors; jaxgen logs Python floats, and importing torch costs over a
  second at every start of every command. A torch imported before stays as it is.
  """
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)
