"""`jaxgen train`: train a recipe's model in --workdir, or resume the run there."""

from __future__ import annotations

import sys

from absl import flags

from jaxgen import distributed, supervise
from jaxgen.cli import common
from jaxgen.cli.command import Command


def run() -> None:
  cfg, workdir = common.CONFIG.value, common.WORKDIR.value
  _join_job(cfg, workdir)  # before anything touches a JAX backend
  common.setup_jax(cfg)
  from jaxgen.interop.workdir import adopt
  from jaxgen.train.loop import train_and_evaluate  # heavy imports after the checks
  adopt(cfg, workdir)  # an imported workdir's start: no-op otherwise
  train_and_evaluate(cfg, workdir)
  distributed.shutdown()


def _join_job(cfg, workdir: str) -> None:
  """Joins a multi-process job, if this is one of its processes; otherwise nothing.

  The job's work runs in a child process (see `supervise`), so that losing
  another process ends this one with a line rather than a runtime abort.
  """
  launch = distributed.resolve(cfg.distributed)
  if not launch.multi_process:
    return
  if not supervise.is_worker():
    sys.stdout.flush()
    sys.exit(supervise.run([sys.executable, *sys.orig_argv[1:]], launch.process_id,
                           workdir, show_all=flags.FLAGS["verbosity"].present,
                           join_failure=distributed.join_failure(launch, cfg.distributed)))
  print(distributed.initialize(launch, cfg.distributed), flush=True)


COMMANDS = {"train": Command(
    "train a recipe's model in --workdir, or resume the run already there",
    ("config", "workdir"), (), run)}
