"""Session-wide test setup: fast XLA:CPU compiles and one persistent compilation cache.

XLA reads XLA_FLAGS when the first backend starts, after this module is imported:
tests.helpers.FAST_COMPILE_FLAGS (why: there) are added to the flags the suite was
started with, so in-process tests compile with them too.

Many tests build the same small models and train steps again (in-process and
through the command line); with a cache shared by the session, and by the
subprocesses it starts through the environment, each distinct program is
compiled once. A command given its own `train.compilation_cache_dir` still
uses that one, as the compilation-cache test does.

The suite runs under pytest-xdist (pyproject.toml's addopts): one worker per core,
each given whole files, all sharing that one cache.
"""

import os
import shutil
import socket
import tempfile

import jax
import pytest

from tests.helpers import FAST_COMPILE_FLAGS

if FAST_COMPILE_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_FLAGS}".strip()

# Under pytest-xdist every worker imports this module: the first process (the controller,
# or a plain run) makes the cache and hands it to the workers through the environment.
_OWNER = "JAXGEN_TEST_XLA_CACHE" not in os.environ
if _OWNER:
  os.environ["JAXGEN_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxgen-tests-xla-cache-")
_CACHE = os.environ["JAXGEN_TEST_XLA_CACHE"]


def pytest_configure(config):
  del config
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def pytest_unconfigure(config):
  del config
  if _OWNER:
    shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker per core, at most 8. Each worker holds JAX with 8 host devices
  and starts whole jobs of one or two processes, so more than that crowds memory."""
  del config
  return max(1, min(os.cpu_count() or 1, 8))


@pytest.fixture
def no_network(monkeypatch):
  """Any attempt to open a connection fails the test (RuntimeError is not retried)."""
  def refuse(*args, **kwargs):
    raise RuntimeError(f"network access attempted: {args[:2]}")
  monkeypatch.setattr(socket, "getaddrinfo", refuse)
  monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def offline(monkeypatch):
  """Name resolution fails at once, as on a machine without a network."""
  def unreachable(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
  monkeypatch.setattr(socket, "getaddrinfo", unreachable)
  monkeypatch.setattr(socket.socket, "connect", unreachable)
