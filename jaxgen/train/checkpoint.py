"""Orbax checkpoints in WORKDIR/checkpoints/<step>/, each one the whole run.

A checkpoint holds three items: `state` (parameters, optimizer state, step,
RNG), `data` (each host's Grain iterator position, as JSON) and `meta` (the
config and the tokenizer, as JSON), so any single checkpoint restores the
run exactly, and sampling needs nothing else from the workdir.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxgen.errors import UserError

_BEST_METRIC = "val_loss"


class Checkpointer:
  """Asynchronous saves every `every_steps` steps; keeps the newest `keep`, plus
  the one with the lowest validation loss when `keep_best` is set."""

  def __init__(self, workdir: pathlib.Path, *, every_steps: int = 0, keep: int = 1,
               keep_best: bool = False, read_only: bool = False):
    self.every_steps = every_steps
    self.read_only = read_only
    self.directory = (pathlib.Path(workdir) / "checkpoints").absolute()
    keep_policy = policies.LatestN(n=max(1, keep))
    if keep_best:
      keep_policy = policies.AnyPreservationPolicy([keep_policy, policies.BestN(
          get_metric_fn=_metric, reverse=True, n=1, keep_checkpoints_without_metrics=False)])
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            # Readers keep everything: Orbax deletes old checkpoints only when
            # saving, and a reader never saves.
            preservation_policy=policies.LatestN(n=None) if read_only else keep_policy,
            # Validation losses are recorded with every checkpoint that has
            # one, so `best_step` works whether or not the best is kept.
            best_fn=_metric, best_mode="min", keep_checkpoints_without_metrics=True,
            create=not read_only, read_only=read_only,
            enable_async_checkpointing=True, enable_background_delete=True))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step (Orbax ignores unfinished saves)."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The step with the lowest recorded validation loss, if any has one."""
    scored = [(_metric(m), s) for s in self.all_steps()
              if (m := self._metrics(s)) is not None]
    return min(scored)[1] if scored else None

  def meta(self, step: int) -> dict[str, Any]:
    """The config and tokenizer saved with `step`: {"config": ..., "tokenizer": ...}."""
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, like, sharding=None, *, step: int | None = None, data_iterator=None,
              check_meta=None, reposition=None) -> tuple[Any, int]:
    """(state, step) from checkpoint `step`, or from the newest readable one.

    Each value takes `like`'s sharding (arrays or ShapeDtypeStructs), or
    `sharding` for all when given: a checkpoint saved on one mesh restores
    onto any other. `data_iterator` (a Grain iterator) is moved to the saved
    position. `check_meta(meta)` may raise UserError to refuse a checkpoint
    (another model, another tokenizer). Without `step`, a checkpoint that
    fails to read (truncated or garbled files) is reported in one line and
    the one before it is used; saves cut off mid-way are never listed.

    Each process saves its own iterator position, so a checkpoint written by
    another number of processes has none for this one: `reposition(meta,
    step)` must then place `data_iterator` itself, or raise UserError.
    """
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding), like)
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    for s in steps:
      try:
        meta = self.meta(s)
        if check_meta is not None:
          check_meta(meta)
        items = {"state": ocp.args.StandardRestore(abstract)}
        if data_iterator is not None:
          if meta.get("processes", 1) == jax.process_count():
            items["data"] = _data_restore_args(data_iterator)
          else:
            reposition(meta, s)
        return self._manager.restore(s, args=ocp.args.Composite(**items))["state"], s
      except UserError:
        raise
      except Exception as e:  # Orbax and TensorStore raise many types for bad files
        if step is not None:
          raise UserError(f"checkpoint {self.directory / str(s)} cannot be read "
                          f"({_short(e)}); choose another step") from None
        self._set_aside(s, e)
    raise UserError(f"no checkpoint in {self.directory} can be read (damaged files, or "
                    "saved by an incompatible jaxgen); use a new --workdir")

  def restore_params(self, like_params, sharding, step: int):
    """Only the parameters of checkpoint `step` (no optimizer state), all with `sharding`."""
    abstract = {"params": jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), like_params)}
    args = ocp.args.PyTreeRestore(item=abstract, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))
    try:
      return self._manager.restore(step, args=ocp.args.Composite(state=args))["state"]["params"]
    except Exception as e:  # as in `restore`: bad files raise many types
      raise UserError(f"checkpoint {self.directory / str(step)} cannot be read ({_short(e)}); "
                      "choose another step") from None

  def due(self, step: int) -> bool:
    return bool(self.every_steps) and step % self.every_steps == 0

  def save(self, step: int, state, *, meta: dict[str, Any], data_state: bytes | None = None,
           val_loss: float | None = None) -> None:
    """Starts an asynchronous save of `state` (and the rest of the run) as `step`.

    The device-to-host copy happens before this returns, so the caller may
    donate `state` to the next step right away. `data_state` is this host's
    iterator state (`iterator.get_state()` as JSON bytes) taken at `step`.
    """
    if self.read_only:
      raise RuntimeError("this Checkpointer was opened read-only")
    if self.latest_step() == step:
      return
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_state is not None:
      items["data"] = _data_save_args(data_state)
    # An empty dict rather than None: Orbax warns on every save without metrics.
    metrics = {_BEST_METRIC: float(val_loss)} if val_loss is not None else {}
    self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

  def close(self) -> None:
    """Waits for the save in flight to be complete on disk."""
    self._manager.wait_until_finished()
    self._manager.close()

  def _metrics(self, step: int) -> dict | None:
    try:
      metrics = self._manager.metrics(step)
    except (OSError, ValueError):  # an unreadable metrics file ranks as none
      return None
    return metrics if isinstance(metrics, dict) and _BEST_METRIC in metrics else None

  def _set_aside(self, step: int, error: Exception) -> None:
    path = self.directory / str(step)
    aside = ""
    # With several processes, each would rename it: it stays in place, and
    # the next save of this step replaces it.
    if not self.read_only and jax.process_count() == 1:
      # Kept for inspection, out of the way of the next save at this step.
      path.rename(path.with_name(f"{step}.unreadable"))
      self._manager.reload()
      aside = f", moved to {step}.unreadable"
    if jax.process_index() == 0:
      print(f"jaxgen: warning: checkpoint {path} cannot be read ({_short(error)}){aside}; "
            "trying the one before it", file=sys.stderr, flush=True)


class _IteratorState:
  """A Grain iterator's state frozen at save time.

  Grain's Orbax handler asks its item for `get_state()`; handing it this
  snapshot instead of the live iterator keeps an asynchronous save from
  recording a position the training loop has already moved past.
  """

  def __init__(self, state: bytes):
    self._state = state

  def get_state(self) -> bytes:
    return self._state


def _data_save_args(state: bytes):
  import grain  # lazily: sampling-only installs need no Grain
  return grain.checkpoint.CheckpointSave(_IteratorState(state))


def _data_restore_args(iterator):
  import grain
  return grain.checkpoint.CheckpointRestore(iterator)


def _metric(metrics: dict) -> float:
  # Checkpoints saved without an evaluation rank last.
  return float(metrics.get(_BEST_METRIC, float("inf")))


def _short(e: BaseException, limit: int = 200) -> str:
  """The error's text on one line, cut at a word boundary (never inside a path)."""
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
