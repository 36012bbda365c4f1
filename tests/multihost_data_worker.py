"""One of two processes of `test_multihost_data.py`: what this host's pipeline reads.

Usage: python -m tests.multihost_data_worker PORT PROCESS_ID CORPUS MODE OUT_JSON
"""

import json
import sys

import jax


def main(port, process_id, corpus, mode, out):
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id),
                             initialization_timeout=120)
  from jaxgen.train.loop import prepare
  from tests.helpers import tiny_transformer_config
  cfg = tiny_transformer_config(corpus, batch_size=4)
  cfg.data.update(text_lines=True, mode=mode, val_fraction=0.0)
  setup = prepare(cfg, f"{out}.workdir")
  it = iter(setup.train_data)
  batches = [{k: v.tolist() for k, v in next(it).items()} for _ in range(32)]
  it.close()
  with open(out, "w") as f:
    json.dump({"process": jax.process_index(), "count": jax.process_count(),
               "batches": batches}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
