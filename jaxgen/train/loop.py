"""The training loop: validate everything, then train, evaluate, log and sample."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxgen import config_check, tasks
from jaxgen import metrics as metrics_lib
from jaxgen.data import mixture, pairs, store
from jaxgen.data.pipeline import windows_state
from jaxgen.data.tokenizer import Tokenizer, tokenizer_from_spec
from jaxgen.errors import UserError
from jaxgen.models.factory import ModelConfig, model_config
from jaxgen.parallel import mesh as mesh_lib, specs
from jaxgen.train.checkpoint import Checkpointer
from jaxgen.train.evaluation import (close_iterator, decoded_metrics, evaluate,
                                     full_split_batches, loss_sums)
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.preemption import StopRequest
from jaxgen.train.state import count_params, create_train_state, model_flops_per_token
from jaxgen.train.step import jit_train_step, make_eval_step
from jaxgen.messages import count

# What a jaxgen without a stream key did, where it matters: pair files, and local
# sources of several documents, split at their tail.
_BEFORE_KEY = {"data.pair_split": "tail", "data.doc_split": "tail"}


@dataclasses.dataclass
class Setup:
  """Everything derived from the config and data before the workdir is touched."""
  workdir: pathlib.Path
  tokenizer: Tokenizer
  train_data: Any  # grain.IterDataset of this host's batches
  eval_data: Any  # None when not evaluating
  full_eval_data: Any  # one pass over the validation split, or None
  model_cfg: ModelConfig
  mesh: jax.sharding.Mesh
  rules: tuple
  meta: dict  # saved with every checkpoint: the config and the tokenizer
  task: Any  # tasks.task_of(cfg.data)
  # Paired data: the validation pairs decoded for text metrics at each evaluation.
  decode_pairs: list = dataclasses.field(default_factory=list)
  source_len: int = 0
  # The data.doc_split rule the documents' split depends on; None where none would
  # change it (pairs, TFDS, bundled, one document, val_fraction 0).
  doc_split: str | None = None
  # A mixture's validation: (component, sampled batches, one whole pass or None) each.
  eval_parts: list = dataclasses.field(default_factory=list)


def prepare(cfg: ml_collections.ConfigDict, workdir: str) -> Setup:
  """Checks the config, mesh, data and workdir; raises UserError on the first problem.

  Nothing is written here, so a bad run leaves no trace in the workdir.
  """
  config_check.check(cfg)
  wd = _check_workdir(workdir)
  rules = tuple(tuple(r) for r in cfg.mesh.logical_axis_rules)
  mesh = mesh_lib.make_mesh(cfg.mesh)
  hosts = jax.process_count()
  problems = config_check.batch_problems(cfg, dict(mesh.shape), hosts)
  if problems:
    raise UserError(problems[0])

  d = cfg.data
  task = tasks.task_of(d)
  built = task.build(cfg, jax.process_index(), hosts,
                     evaluate=bool(cfg.eval.every_steps and cfg.eval.steps),
                     full_split=cfg.eval.get("full_split_at_end", False))
  tokenizer = built.tokenizer
  model_cfg = model_config(cfg.model, tokenizer.vocab_size, d.seq_len, built.source_len)
  # The process count says whose iterator positions a checkpoint holds.
  meta = {"config": json.loads(cfg.to_json_best_effort()), "tokenizer": tokenizer.spec(),
          "processes": hosts, "stores": store.manifest_hashes(d)}
  return Setup(wd, tokenizer, built.train_data, built.eval_data, built.full_eval_data,
               model_cfg, mesh, rules, meta, task, built.decode_pairs, built.source_len,
               built.doc_split, built.eval_parts)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains as `cfg` says; returns the final metrics (also in WORKDIR/metrics.jsonl)."""
  s = prepare(cfg, workdir)
  primary = jax.process_index() == 0
  t = cfg.train
  optimizer, schedule = make_optimizer(t)
  graphdef, state, state_sh = create_train_state(s.model_cfg, optimizer, t.seed, s.mesh, s.rules)
  batch_sh = specs.batch_sharding(s.mesh, s.rules)
  train_step = jit_train_step(graphdef, optimizer, schedule, t, state_sh, batch_sh, s.rules)
  eval_step = jax.jit(make_eval_step(graphdef, s.mesh, s.rules),
                      in_shardings=(state_sh.params, batch_sh))

  ckpt = Checkpointer(s.workdir, every_steps=cfg.checkpoint.every_steps, keep=cfg.checkpoint.keep,
                      keep_best=cfg.checkpoint.keep_best)
  train_iter = iter(s.train_data)
  if ckpt.latest_step() is not None:
    try:
      state, restored_step = ckpt.restore(
          state, data_iterator=train_iter, check_meta=functools.partial(_check_compatible, s),
          reposition=functools.partial(_reposition, s.task, cfg, train_iter))
    except BaseException:
      close_iterator(train_iter)
      ckpt.close()
      raise
    if primary:
      print(f"jaxgen: resuming from {ckpt.directory / str(restored_step)} "
            f"(step {int(state.step)})", flush=True)
  if primary:
    # Readable copies for people and tools; runs restore from the checkpoints' own.
    s.workdir.mkdir(parents=True, exist_ok=True)
    s.tokenizer.save(s.workdir / "tokenizer.json")
    (s.workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2) + "\n")
  n_params = count_params(state.params)
  if primary:
    print(f"jaxgen: {type(s.model_cfg).__name__} with {n_params:,} parameters on "
          f"{count(s.mesh.devices.size, jax.devices()[0].platform + ' device')}, mesh "
          f"{dict(s.mesh.shape)}; workdir {s.workdir}", flush=True)
  writer = metrics_lib.MetricsWriter(
      s.workdir, total_steps=t.steps, tokens_per_step=t.batch_size * cfg.data.seq_len,
      flops_per_token=model_flops_per_token(s.model_cfg, state.params, cfg.data.seq_len,
                                            s.source_len),
      peak_flops=metrics_lib.peak_flops(jax.devices()[0]), log_every=t.log_every,
      is_primary=primary, start_step=int(state.step))

  last = {}
  finished = False  # a run that raises prints no summary line
  pending = None  # (step, device metrics) of the step before the one in flight
  ckpt_open = True
  trained_to_end = False  # this run took the last step and saved it
  stopped_training = False  # a signal stopped it before the last step
  with StopRequest(multi_process=jax.process_count() > 1) as stop:
    try:
      for step in range(int(state.step), t.steps):
        batch = specs.put_batch(next(train_iter), batch_sh)
        state, step_metrics = train_step(state, batch)
        drawn = _drawn_tokens(train_iter)
        # Fetching the previous step's metrics only now keeps one step queued
        # behind the running one: the device never waits for the host, and no
        # more than two steps are ever in flight.
        if pending is not None:
          last.update(_report(writer, *pending))
        pending = (step + 1, step_metrics, drawn)
        last_step = step + 1 == t.steps
        stopping = stop.should_stop(step + 1)
        save = last_step or stopping or ckpt.due(step + 1)
        evaluate_now = bool(cfg.eval.every_steps and cfg.eval.steps) and (
            (step + 1) % cfg.eval.every_steps == 0 or last_step)
        if save or evaluate_now:
          # Reported first: a step whose loss is not finite stops the run
          # before it can be saved, so the newest checkpoint is always good.
          last.update(_report(writer, *pending))
          pending = None
        val_loss = None
        if evaluate_now:  # the sampled loss first: the checkpoint ranks by it
          val_loss, val_parts = _validate(s, cfg, writer, step + 1, eval_step, state.params,
                                          batch_sh)
          last["val_loss"] = val_loss
        if save:
          ckpt.save(step + 1, state, meta=s.meta, val_loss=val_loss,
                    data_state=json.dumps(train_iter.get_state()).encode())
        if last_step and not stopping:
          # Complete on disk before anything slow runs after the last step
          # (decoding, the whole-split loss, the sample): a Ctrl-C there loses
          # nothing. No save follows.
          ckpt.close()
          ckpt_open, trained_to_end = False, True
        if evaluate_now:
          record = {"val_loss": val_loss, **val_parts}
          if s.decode_pairs:
            record.update(decoded_metrics(s, graphdef, state.params))
            last.update(record)
          writer.eval(step + 1, record)
          last["best_val_loss"] = writer.best_val_loss
        if stopping:
          break
      if pending is not None:
        last.update(_report(writer, *pending))
      if stop and not trained_to_end:
        stopped_training = True
        # Through the writer: a line of its own, not the end of the progress bar's.
        writer.message(f"jaxgen: {stop.signal_name} received: saving step {int(state.step)}; "
                       "a second signal stops at once, without this save")
        last["stopped_by"] = stop.signal_name
      else:
        last.update(_end_of_run(cfg, s, writer, stop, eval_step, graphdef, state.params,
                                batch_sh, ckpt.directory, full_split=trained_to_end))
      finished = True
    finally:
      close_iterator(train_iter)
      if ckpt_open:
        ckpt.close()
      writer.close(finished=finished)
  # Only now is the stop's checkpoint complete on disk. With several
  # processes each says so: their logs show they stopped at the same step.
  if stopped_training and (primary or jax.process_count() > 1):
    who = f"process {jax.process_index()} " if jax.process_count() > 1 else ""
    print(f"jaxgen: {who}stopped at step {int(state.step)} with a checkpoint in "
          f"{ckpt.directory}; run the same command to resume", flush=True)
  return last


def _end_of_run(cfg, s: Setup, writer, stop, eval_step, graphdef, params, batch_sh,
                checkpoints: pathlib.Path, *, full_split: bool) -> dict:
  """The whole-split loss (when `full_split`: this run trained to the end) and the
  sample, after the final checkpoint is complete on disk; a Ctrl-C or SIGTERM
  skips what is left in one line. Returns what they add to the final metrics."""
  out = {}
  # Stop checks continue the steps' count: with several processes the stop is
  # agreed at one of them, as during training (StopRequest.should_stop).
  checks = itertools.count(cfg.train.steps + 1)
  skipped = None
  full = ([(None, s.full_eval_data)] if s.full_eval_data is not None else
          [(c, ds) for c, _, ds in s.eval_parts]
          if all(ds is not None for _, _, ds in s.eval_parts) else [])
  if full_split and full:
    max_batches = full_split_batches(cfg)
    per_part = []
    for c, ds in full:
      what = f"eval full split{f' of {c.name}' if c else ''} @ step {cfg.train.steps}"
      with writer.progress(what, max_batches) as progress:
        sums = loss_sums(eval_step, params, ds, max_batches, batch_sh, progress=progress,
                         should_stop=lambda: stop.should_stop(next(checks)))
      if sums is None:
        skipped = "evaluation" + (" and sample" if cfg.sample.num_tokens > 0 else "")
        break
      per_part.append((c, float(sums[0] / sums[1]), int(round(sums[1]))))
    if skipped is None:
      if per_part[0][0] is None:
        out["val_loss_full_split"] = per_part[0][1]
      else:  # a mixture: each component's, and their weighted mean
        out.update((f"val_loss_full_split_{c.name}", loss) for c, loss, _ in per_part)
        out["val_loss_full_split"] = mixture.mixed_loss([(c, l) for c, l, _ in per_part])
      out["val_full_split_tokens"] = sum(n for _, _, n in per_part)
      writer.eval(cfg.train.steps, dict(out))
  if skipped is None and cfg.sample.num_tokens > 0:
    if stop.should_stop(next(checks)):
      skipped = "sample"
    else:
      out["sample"] = s.task.sample(cfg, s, graphdef, params)
      writer.text(cfg.train.steps, "sample", out["sample"])
  if skipped is not None:
    writer.message(f"jaxgen: {stop.signal_name} received: end-of-run {skipped} skipped; the "
                   f"checkpoint of step {cfg.train.steps} is complete in "
                   f"{checkpoints / str(cfg.train.steps)}")
    out["stopped_by"] = stop.signal_name
  return out


def _validate(s: Setup, cfg, writer, step: int, eval_step, params, batch_sh
              ) -> tuple[float, dict]:
  """The sampled validation loss and, for a mixture, each component's (val_loss_NAME);
  a mixture's val_loss is their weighted mean. The model's auxiliary losses, if it
  has any, come as val_NAME, mixed likewise."""
  n = cfg.eval.steps
  parts = s.eval_parts or [(None, s.eval_data, None)]
  with writer.progress(f"eval step {step}", n * len(parts)) as progress:
    results = [(c, *evaluate(eval_step, params, ds, n, batch_sh, progress=progress))
               for c, ds, _ in parts]
  if not s.eval_parts:
    loss, aux = results[0][1:]
    return loss, {f"val_{name}": value for name, value in aux.items()}
  mixed = {f"val_{name}": mixture.mixed_loss([(c, aux[name]) for c, _, aux in results])
           for name in results[0][2]}
  return (mixture.mixed_loss([(c, loss) for c, loss, _ in results]),
          {**{f"val_loss_{c.name}": loss for c, loss, _ in results}, **mixed})


def _drawn_tokens(train_iter) -> dict[str, int] | None:
  """A mixture's tokens drawn by this process from each component so far."""
  drawn = getattr(train_iter, "drawn_tokens", None)
  return None if drawn is None else drawn()


def _report(writer, step: int, device_metrics, drawn: dict | None = None) -> dict:
  m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
  if drawn:  # every process reports at the same steps, so all join the gather
    values = np.asarray(list(drawn.values()), np.int64)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      values = np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)
    m.update((f"tokens_{name}", int(v)) for name, v in zip(drawn, values))
  if not (math.isfinite(m["train_loss"]) and math.isfinite(m["grad_norm"])):
    writer.train(step, m)
    raise UserError(f"training diverged at step {step}: train_loss={m['train_loss']}, "
                    f"grad_norm={m['grad_norm']}; lower train.learning_rate, raise "
                    "train.warmup_steps or set train.grad_clip")
  writer.train(step, m)
  return {"step": step, "train_loss": m["train_loss"]}


def _reposition(task, cfg, train_iter, meta: dict, step: int) -> None:
  """Continues the data stream of a checkpoint from another number of processes."""
  saved = meta.get("processes", 1)
  if not task.resumes_on_other_process_counts(cfg):
    what = task.what(cfg)
    raise UserError(
        f"the checkpoint of step {step} was written by {saved} process(es), and "
        f"{what} keeps each process's own position in its share of the data, "
        f"which {jax.process_count()} process(es) cannot take over without replaying or "
        f"skipping data; resume with {saved} process(es), or start a new --workdir"
        + ("" if task.conditional else
           " (data.mode='windows' streams do not depend on the process count)"))
  # A windows batch is a function of the seed and its index alone.
  train_iter.set_state(windows_state(step))


def _check_compatible(s: Setup, meta: dict) -> None:
  """Refuses checkpoints this config cannot continue: another tokenizer, another
  model shape, or another stream of training batches."""
  where = f"the checkpoints in {s.workdir / 'checkpoints'}"
  if tokenizer_from_spec(meta["tokenizer"]) != s.tokenizer:
    raise UserError(f"data.source and data.tokenizer give a different tokenizer "
                    f"({s.tokenizer!r}) than {where} were trained with "
                    f"({tokenizer_from_spec(meta['tokenizer'])!r}); use the same data and "
                    "tokenizer, or a new --workdir")
  saved = ml_collections.ConfigDict(meta["config"])
  saved_model = model_config(saved.model, s.tokenizer.vocab_size, saved.data.seq_len,
                             saved.data.get("source_len", 0))
  ours, theirs = dataclasses.asdict(s.model_cfg), dataclasses.asdict(saved_model)
  differ = [f"model.{k}={ours[k]!r} (saved: {theirs.get(k)!r})" for k in ours if ours[k] != theirs.get(k)]
  if type(s.model_cfg) is not type(saved_model):
    differ = [f"model.type={s.meta['config']['model']['type']!r} (saved: {saved.model.type!r})"]
  if differ:
    raise UserError(f"this config's model differs from the one {where} hold: "
                    f"{', '.join(differ)}; use the config they were trained with, or a new "
                    "--workdir")
  _check_same_stores(s, meta)
  ours_cfg = s.meta["config"]
  # A key the saved config lacks (saved by an older jaxgen) cannot be compared, unless
  # the older jaxgen's behaviour is known.
  # The keys that define the task's stream of training batches: a resumed run whose
  # config changes one of them could not continue where it stopped.
  keys = s.task.stream_keys
  saved_stream = {k: _get(meta["config"], k) for k in keys}
  applies = {"data.pair_split": pairs.is_pair_file(saved.data),
             "data.doc_split": s.doc_split is not None}
  saved_stream.update({k: v for k, v in _BEFORE_KEY.items()
                       if k in keys and applies[k] and saved_stream[k] is _MISSING})
  if s.doc_split is None and "data.doc_split" in keys:  # no data.doc_split changes it
    saved_stream["data.doc_split"] = _MISSING
  changed = [k for k in keys
             if saved_stream[k] is not _MISSING and _get(ours_cfg, k) != saved_stream[k]]
  if changed:
    raise UserError(
        "this config changes the training data stream of the run in " f"{s.workdir}: "
        + ", ".join(f"{k}={_get(ours_cfg, k)!r} (saved: {saved_stream[k]!r})"
                    for k in changed)
        + "; resume with the saved values, or start a new --workdir")


def _check_same_stores(s: Setup, meta: dict) -> None:
  """A store rebuilt or replaced under its path holds other records in other places:
  the saved data position would continue on other data. (Checkpoints written before
  jaxgen recorded the manifests' hashes are not checked.)"""
  for directory, digest in meta.get("stores", {}).items():
    ours = s.meta["stores"].get(directory)
    if ours is not None and ours != digest:
      raise UserError(
          f"token store {directory} is not the one the checkpoints in "
          f"{s.workdir / 'checkpoints'} were trained on (its manifest.json changed: rebuilt "
          "or replaced since); resume on that store, or start a new --workdir")


_MISSING = object()


def _get(config: dict, dotted: str):
  for key in dotted.split("."):
    config = config.get(key, _MISSING) if isinstance(config, dict) else _MISSING
  return config


def _check_workdir(workdir: str) -> pathlib.Path:
  if not workdir:
    raise UserError("--workdir is required: the directory for metrics, TensorBoard files "
                    "and checkpoints")
  wd = pathlib.Path(workdir).expanduser()
  if wd.exists() and not wd.is_dir():
    raise UserError(f"--workdir={workdir} is a file, not a directory; pick another path")
  parent = next((p for p in [wd, *wd.parents] if p.exists()), None)
  if parent is not None and not os.access(parent, os.W_OK):
    raise UserError(f"--workdir={workdir} cannot be created: {parent} is not writable")
  return wd
