"""train.compilation_cache_dir: the command line fills JAX's persistent cache, and the
next run loads its programs from there instead of compiling them again."""

import pytest
import os
import pathlib
import subprocess
import sys

from tests.helpers import write_corpus, xla_flags

pytestmark = pytest.mark.slow  # whole runs of the command

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_compilation_cache_is_filled_then_used(tmp_path):
  source = write_corpus(tmp_path / "verse.txt")
  cache = tmp_path / "xla"

  def train(workdir):
    # JAX_LOG_COMPILES makes JAX log each persistent-cache hit as a warning, and
    # --verbosity shows library warnings.
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(), JAX_LOG_COMPILES="1")
    done = subprocess.run(
        [sys.executable, "-m", "jaxgen", "train", "--config=configs/shakespeare_char_cpu.py",
         f"--config.data.source={source}", "--config.train.steps=2",
         "--config.model.num_layers=1", "--config.model.embed_dim=32",
         "--config.data.seq_len=32", "--config.eval.every_steps=0",
         "--config.sample.num_tokens=0", f"--config.train.compilation_cache_dir={cache}",
         "--verbosity=-1", f"--workdir={workdir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr

  first = train(tmp_path / "a")
  def entries():
    return {p.name: p.stat().st_mtime_ns for p in cache.glob("*-cache")}

  written = entries()
  keys = [name.removesuffix("-cache") for name in written]
  assert any(k.startswith("jit_train_step-") for k in keys), (sorted(written), first[-2000:])
  second = train(tmp_path / "b")  # a new run of the same programs
  for key in keys:
    assert f"Persistent compilation cache hit for '{key.split('-')[0]}' with key '{key}'" in (
        second), (key, second[-3000:])
  # Read, not compiled and written again.
  assert entries() == written
