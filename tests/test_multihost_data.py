"""Two processes on 127.0.0.1 through jax.distributed: each reads only its own slice."""

import pytest
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

from jaxgen.data.tokenizer import CharTokenizer
from jaxgen.data.pipeline import make_dataset
from tests.helpers import xla_flags

pytestmark = pytest.mark.slow  # one process per host

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [f"line {i:02d} of the test corpus" for i in range(24)]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def two_hosts(tmp_path, mode):
  corpus = tmp_path / "docs.txt"
  corpus.write_text("\n".join(DOCS) + "\n")
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.multihost_data_worker", str(port), str(i),
       f"text:{corpus}", mode, str(tmp_path / f"host{i}.json")],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  try:
    for p in procs:
      _, err = p.communicate(timeout=300)
      assert p.returncode == 0, err
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  hosts = [json.loads((tmp_path / f"host{i}.json").read_text()) for i in range(2)]
  assert [(h["process"], h["count"]) for h in hosts] == [(0, 2), (1, 2)]
  return corpus, [[{k: np.asarray(v) for k, v in b.items()} for b in h["batches"]]
                  for h in hosts]


def test_packed_documents_are_split_between_hosts(tmp_path):
  _, (host0, host1) = two_hosts(tmp_path, "pack")
  tokenizer = CharTokenizer.from_text("".join(DOCS))  # as the workers build it

  def documents(batches):
    seen = set()
    for b in batches:
      for row_ids, row_seg in zip(b["inputs"], b["segment_ids"]):
        for s in set(row_seg.tolist()) - {0}:
          seen.add(tokenizer.decode(row_ids[row_seg == s]))
    return seen

  docs0, docs1 = documents(host0), documents(host1)
  assert docs0.isdisjoint(docs1)
  # 32 batches of 2 rows: a whole flush of the packer's 64 bins, over 5 epochs of 12 docs.
  assert docs0 | docs1 == set(DOCS)
  assert len(docs0) == len(docs1) == 12


def test_window_rows_of_two_hosts_make_the_single_host_batches(tmp_path):
  corpus, (host0, host1) = two_hosts(tmp_path, "windows")
  tokenizer = CharTokenizer.from_text("".join(DOCS))  # as the workers build it
  single = iter(make_dataset(DOCS, tokenizer, seq_len=32, batch_size=4, mode="windows",
                             seed=0, prefetch=0))
  for b0, b1 in zip(host0, host1):
    whole = next(single)
    np.testing.assert_array_equal(np.concatenate([b0["inputs"], b1["inputs"]]),
                                  whole["inputs"])
    assert not np.array_equal(b0["inputs"], b1["inputs"])
