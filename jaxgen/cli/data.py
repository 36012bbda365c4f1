"""`jaxgen data prepare` and `jaxgen data inspect`: data work before a run."""

from __future__ import annotations

import shlex
import sys

import ml_collections
from absl import flags

from jaxgen import tasks
from jaxgen.cli import common
from jaxgen.cli.command import Command
from jaxgen.data import sources
from jaxgen.messages import count

_WORKERS = flags.DEFINE_integer("workers", 0, "tokenizing processes (0: one per core).")
_NUM_HOSTS = flags.DEFINE_integer("num_hosts", None, "hosts sharing the work (default: a "
                                  "SLURM array's task count, else 1).")
_HOST_INDEX = flags.DEFINE_integer("host_index", None, "this host's share, in [0, "
                                   "--num_hosts) (default: SLURM_ARRAY_TASK_ID or "
                                   "JOB_COMPLETION_INDEX, else 0).")
_FINALIZE = flags.DEFINE_bool("finalize", False, "check every host's shards and write the "
                              "store's split and manifest (after --num_hosts > 1).")
_UNIT_MB = flags.DEFINE_float("unit_mb", 64.0, "input MB per unit of work (one shard); part "
                              "of the store's identity.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 2, "batches to show.")


def prepare() -> None:
  cfg = common.CONFIG.value
  common.setup_jax(cfg)
  if not common.OUT.value:
    data_prepare(cfg)
    return
  from jaxgen.data import store_prepare
  hosts, index = store_prepare.host_from_env(_NUM_HOSTS.value, _HOST_INDEX.value)
  store_prepare.prepare(
      cfg, common.OUT.value, workers=_WORKERS.value, num_hosts=hosts, host_index=index,
      finalize=_FINALIZE.value, unit_mb=_UNIT_MB.value, vocab_size=common.VOCAB_SIZE.value,
      command=_prepare_command(), as_json=common.JSON.value)


def inspect() -> None:
  common.setup_jax(common.CONFIG.value)
  data_inspect(common.CONFIG.value, _NUM_BATCHES.value)


def _prepare_command() -> str:
  """This `jaxgen data prepare`, less the flags that only split the work."""
  own = ("--workers", "--num_hosts", "--host_index", "--finalize", "--nofinalize", "--json",
         "--verbosity")
  args = [a for a in sys.argv[1:] if not a.split("=")[0] in own]
  return "jaxgen " + " ".join(shlex.quote(a) for a in args)


def data_prepare(cfg: ml_collections.ConfigDict) -> dict:
  """Readies `data.source` (downloads and prepares TFDS data sets) and prints its sizes."""
  if cfg.data.get("mixture", ""):  # each component, as if it were data.source
    from jaxgen.data import mixture
    return {c.name: data_prepare(ml_collections.ConfigDict({**cfg.to_dict(),
                                                            "data": mixture.component_cfg(
                                                                cfg.data, c).to_dict()}))
            for c in mixture.parse(cfg.data.mixture)}
  return tasks.task_of(cfg.data).sizes(cfg)


def data_inspect(cfg: ml_collections.ConfigDict, num_batches: int) -> None:
  """Prints the first training batches decoded: what the model will be fed."""
  d = cfg.data
  if sources.parse_source(d.source)[0] == "store" and not d.get("mixture", ""):
    from jaxgen.data.store import open_store
    store = open_store(sources.parse_source(d.source)[1])
    checked = store.verify()
    m = store.manifest
    print(f"{d.source}: a token store (task {m['task']!r}) of {m['source']!r} "
          f"({count(len(m['shards']), 'shard')}, {checked / 2**20:,.1f} MB, every checksum "
          "verified); splits: "
          + ", ".join(f"{k} {count(v['records'], 'record')} / {count(v['tokens'], 'token')}"
                      for k, v in m["splits"].items()), flush=True)
  tasks.task_of(d).inspect(cfg, num_batches)


COMMANDS = {
    "data prepare": Command(
        "prepare the config's data source (TFDS data sets) and print its sizes; with "
        "--out=DIR, tokenize it once into a token store",
        ("config",), ("workers", "num_hosts", "host_index", "finalize", "unit_mb", "out",
                      "json", "vocab_size"), prepare,
        helps={"out": "the token store to write (see README, Data at scale).",
               "json": "with --out, print one JSON summary object instead of text.",
               "vocab_size": "the tokenizer's vocabulary size: where data.tokenizer_path "
                             "names no SentencePiece model yet, one of this many pieces is "
                             "trained first from the train split."}),
    "data inspect": Command(
        "print the first training batches decoded: what the model is fed",
        ("config",), ("num_batches",), inspect),
}
