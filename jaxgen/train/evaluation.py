"""Validation: the loss over sampled or all batches, and decoded text metrics."""

from __future__ import annotations

import itertools

import numpy as np

from jaxgen.parallel import specs
from jaxgen.train import inflight


def full_split_batches(cfg) -> int | None:
  """The batches eval.full_split_max_tokens allows the whole-split pass (None: all)."""
  cap = cfg.eval.get("full_split_max_tokens", 0)
  if not cap:
    return None
  return max(1, cap // ((cfg.eval.batch_size or cfg.train.batch_size) * cfg.data.seq_len))


def evaluate(eval_step, params, data, num_batches: int | None, batch_sh,
             progress=None) -> tuple[float, dict[str, float]]:
  """Mean validation loss over the first `num_batches` batches of `data` (all of
  them for None), the same batches at every evaluation, and the mean of each of
  the model's auxiliary losses (none for most models)."""
  total, count, aux = loss_sums(eval_step, params, data, num_batches, batch_sh,
                                progress=progress)
  return float(total / count), {name: float(value / count) for name, value in aux.items()}


def loss_sums(eval_step, params, data, num_batches: int | None, batch_sh, *, progress=None,
              should_stop=None) -> tuple[float, float, dict[str, float]] | None:
  """(summed loss, summed weight, {name: summed auxiliary loss}) over the first
  `num_batches` batches of `data` (all of them for None); `progress.update()`
  after each batch. Each sum weighs a batch by its weight, as `eval_step` does.

  `should_stop()` is asked before each batch is read (every process reads as
  many, so asks as often); when it says so, the batches in flight are fetched,
  the rest never read, and the result is None.
  """
  it = iter(data)
  stopped = False

  def batches():
    nonlocal stopped
    for _ in itertools.count() if num_batches is None else range(num_batches):
      if should_stop is not None and should_stop():
        stopped = True
        return
      batch = next(it, None)
      if batch is None:
        return
      yield batch

  sums = []
  try:
    for result in inflight.fetched(
        lambda b: eval_step(params, specs.put_batch(b, batch_sh)), batches()):
      sums.append(result)
      if progress is not None:
        progress.update()
  finally:
    close_iterator(it)
  if stopped:
    return None
  # numpy scalars: divided as they always were
  total, count = np.sum([result[:2] for result in sums], axis=0)
  names = sums[0][2] if sums and len(sums[0]) > 2 else {}
  return total, count, {name: np.sum([result[2][name] for result in sums]) for name in names}


def close_iterator(iterator) -> None:
  # Stops Grain's prefetch threads now rather than at interpreter exit.
  close = getattr(iterator, "close", None)
  if close is not None:
    close()


def decoded_metrics(s, graphdef, params) -> dict:
  """Exact match, BLEU and chrF of greedy outputs for the first eval.decode_examples
  validation pairs."""
  from jaxgen.sample import conditional
  from jaxgen.train.text_metrics import text_metrics
  outputs = conditional.generate_from_sources(
      graphdef, params, s.tokenizer, [src for src, _ in s.decode_pairs],
      source_len=s.source_len, max_new_tokens=s.model_cfg.max_len - 1, truncate=True)
  scores = text_metrics([o[0] for o in outputs], [t for _, t in s.decode_pairs])
  return {f"val_{k}": v for k, v in scores.items()}
