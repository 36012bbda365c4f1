"""The command line restarts itself once with glibc malloc tunables."""

import os
import subprocess
import sys

import pytest

from jaxgen import host

SHOW = ("from jaxgen import host; host.restart_with_malloc_tunables(); "
        "import os; print(os.environ['GLIBC_TUNABLES'])")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_restart_sets_tunables_once():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == host.MALLOC_TUNABLES


def test_user_tunables_are_kept():
  env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.arena_max=2")
  out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "glibc.malloc.arena_max=2"
