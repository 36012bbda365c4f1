"""A successful command prints its own output only; library log lines wait for --verbosity.

Orbax logs two warnings on every read-only open, TFDS and urllib3 log on
every retry: none of that reaches a user's terminal from a command that
works, and all of it does with `--verbosity` or when a command crashes.
"""

from __future__ import annotations

import io
import logging
import os
import pathlib
import subprocess
import sys

import pytest

from jaxgen import logs
from tests.helpers import write_corpus, xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]


def jaxgen(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(1))
  return subprocess.run([sys.executable, "-m", "jaxgen", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
  tmp = tmp_path_factory.mktemp("quiet")
  source = write_corpus(tmp / "verse.txt")
  wd = tmp / "run"
  result = jaxgen("train", "--config=configs/shakespeare_char_cpu.py", f"--workdir={wd}",
                  f"--config.data.source={source}", "--config.train.steps=6",
                  "--config.train.log_every=2", "--config.eval.every_steps=3",
                  "--config.eval.steps=2", "--config.checkpoint.every_steps=3",
                  "--config.model.num_layers=1", "--config.model.embed_dim=32",
                  "--config.sample.num_tokens=20", "--config.train.compilation_cache_dir=")
  assert result.returncode == 0, result.stderr
  return wd, result


@pytest.mark.slow
def test_training_writes_nothing_to_stderr(trained):
  _, result = trained
  assert result.stderr == ""
  assert "jaxgen: TransformerConfig with" in result.stdout
  assert "done: 6 steps" in result.stdout


@pytest.mark.slow
def test_sampling_prints_samples_only(trained):
  wd, _ = trained
  result = jaxgen("sample", f"--workdir={wd}", "--prompt=To be", "--max_new_tokens=10",
                  "--num_samples=2")
  assert result.returncode == 0, result.stderr
  assert result.stderr == ""
  assert result.stdout.count("--- sample ") == 2


@pytest.mark.slow
def test_verbosity_shows_library_logs(trained):
  wd, _ = trained
  result = jaxgen("sample", f"--workdir={wd}", "--prompt=To be", "--max_new_tokens=5",
                  "--verbosity=0")
  assert result.returncode == 0, result.stderr
  assert "read_only=True" in result.stderr  # Orbax's own warning, now let through


def test_held_logs_are_shown_on_demand_only():
  out = io.StringIO()
  held = logs.HeldLogs(logging.StreamHandler(out))
  logger = logging.getLogger("jaxgen.tests.held")
  logger.propagate = False
  logger.addHandler(held)
  try:
    for i in range(300):
      logger.warning("line %d", i)
    assert out.getvalue() == ""
    held.show()
    shown = out.getvalue().splitlines()
    assert shown == [f"line {i}" for i in range(100, 300)]  # the most recent 200
    held.show()
    assert len(out.getvalue().splitlines()) == 200  # shown once
  finally:
    logger.removeHandler(held)


def test_library_threads_writing_to_stderr_are_held():
  # TensorStore prints tracebacks of late callbacks straight to sys.stderr from its own
  # threads; the main thread's writes (jaxgen's own) pass through.
  code = """
import sys, threading
from absl import logging
from jaxgen import logs
logging.use_absl_handler()
held = logs.hold_library_logs()
print("jaxgen: main thread", file=sys.stderr)
t = threading.Thread(target=lambda: print("Traceback (library)\\nRuntimeError: x", file=sys.stderr))
t.start(); t.join()
print("-- shown --", file=sys.stderr, flush=True)
held.show()
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60, check=True)
  before, _, after = out.stderr.partition("-- shown --\n")
  assert before == "jaxgen: main thread\n"
  assert "Traceback (library)" in after and "RuntimeError: x" in after
