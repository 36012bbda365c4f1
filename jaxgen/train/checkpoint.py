"""Orbax checkpoints of the whole train state in WORKDIR/checkpoints/<step>/.

The state holds parameters, optimizer state, the step and the RNG; the data
position is the step itself (batches are a pure function of seed and step),
and the tokenizer and config sit beside the checkpoints in the workdir, so a
restored state continues the run exactly.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import orbax.checkpoint as ocp

from jaxgen.errors import UserError


class Checkpointer:
  """Asynchronous saves every `every_steps` steps, keeping the newest `keep`."""

  def __init__(self, workdir: pathlib.Path, *, every_steps: int = 0, keep: int = 1,
               read_only: bool = False):
    self.every_steps = every_steps
    self.read_only = read_only
    self.directory = (workdir / "checkpoints").absolute()
    self._manager = ocp.CheckpointManager(
        self.directory,
        # Readers keep everything: Orbax deletes old checkpoints only when saving,
        # and a reader never saves.
        options=ocp.CheckpointManagerOptions(max_to_keep=None if read_only else max(1, keep),
                                             create=not read_only,
                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step (Orbax ignores unfinished saves)."""
    return self._manager.latest_step()

  def restore(self, like, sharding=None):
    """The newest readable checkpoint, laid out like `like` (arrays or ShapeDtypeStructs).

    Each value takes `like`'s sharding, or `sharding` for all when given: a
    checkpoint saved on one mesh restores onto any other. A checkpoint that
    fails to read (truncated or garbled files) is reported in one line and
    the one before it is used; saves cut off mid-way are never listed.
    """
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding or x.sharding), like)
    for step in sorted(self._manager.all_steps(), reverse=True):
      path = self.directory / str(step)
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # Orbax and TensorStore raise many types for bad files
        aside = ""
        if not self.read_only:
          # Kept for inspection, out of the way of the next save at this step.
          path.rename(path.with_name(f"{step}.unreadable"))
          self._manager.reload()
          aside = f", moved to {step}.unreadable"
        print(f"jaxgen: warning: checkpoint {path} cannot be read "
              f"({' '.join(str(e).split())[:160]}){aside}; trying the one before it",
              file=sys.stderr, flush=True)
    raise UserError(f"no checkpoint in {self.directory} can be read with this config (another "
                    "model shape, or damaged files); use the config it was trained with, or a "
                    "new --workdir")

  def due(self, step: int) -> bool:
    return bool(self.every_steps) and step % self.every_steps == 0

  def save(self, step: int, state) -> None:
    """Starts an asynchronous save of `state` as step `step`.

    The device-to-host copy happens before this returns, so the caller may
    donate `state` to the next step right away.
    """
    if self.read_only:
      raise RuntimeError("this Checkpointer was opened read-only")
    if self.latest_step() != step:
      self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def close(self) -> None:
    """Waits for the save in flight to be complete on disk."""
    self._manager.wait_until_finished()
    self._manager.close()
