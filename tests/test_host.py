"""The command line restarts itself once with glibc malloc tunables."""

import glob
import os
import subprocess
import sys

import pytest

from jaxgen import host

# The child prints a line at every start of the interpreter (an exec starts it again,
# in the same process), then, after the restart:
# - GLIBC_TUNABLES in os.environ;
# - GLIBC_TUNABLES as the process image began with it: /proc/self/environ is the
#   environment the process was exec'd with, which setting os.environ does not change
#   (glibc 2.36 cuts the copy there at the first ':' while parsing it, so only the
#   first tunable may show);
# - whether glibc's malloc serves 16 MiB from an mmap: it does with glibc's defaults
#   (mmap threshold 128 KiB, no top pad), not with the tunables' heap settings (32 MiB
#   threshold, 64 MiB top pad), so this shows this process's malloc runs with them.
SHOW = r"""
import ctypes, os
print('start', os.getpid(), flush=True)
from jaxgen import host
host.restart_with_malloc_tunables()
initial = dict(v.split(b'=', 1) for v in open('/proc/self/environ', 'rb').read().split(b'\0')
               if b'=' in v)
print('environ', os.environ['GLIBC_TUNABLES'])
print('initial', initial.get(b'GLIBC_TUNABLES', b'<unset>').decode())
libc = ctypes.CDLL('libc.so.6')
if hasattr(libc, 'mallinfo2'):
  class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',
                'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
  libc.mallinfo2.restype = MallInfo2
  libc.malloc.restype = ctypes.c_void_p
  before = libc.mallinfo2().hblks
  block = libc.malloc(16 << 20)
  print('mmapped', libc.mallinfo2().hblks - before)
else:
  print('mmapped unknown')
"""


def _show(env) -> tuple[list[str], dict]:
  out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                       check=True, timeout=60).stdout.splitlines()
  starts = [l for l in out if l.startswith("start ")]
  return starts, dict(l.split(" ", 1) for l in out if not l.startswith("start "))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_restart_sets_tunables_once():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  starts, seen = _show(env)
  # Two starts in one process: the program was exec'd again, once.
  assert len(starts) == 2 and starts[0] == starts[1], starts
  assert seen["environ"] == host.MALLOC_TUNABLES
  # The new process image started with the tunables, where glibc reads them.
  assert seen["initial"].split(":")[0] == host.MALLOC_TUNABLES.split(":")[0], seen
  assert host.MALLOC_TUNABLES.startswith(seen["initial"]), seen
  assert seen["mmapped"] in ("0", "unknown"), seen  # glibc applied the mmap threshold


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/environ")
def test_user_tunables_are_kept():
  env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.arena_max=2")
  starts, seen = _show(env)
  assert len(starts) == 1, starts  # no restart
  assert seen["environ"] == seen["initial"] == "glibc.malloc.arena_max=2"
  assert seen["mmapped"] in ("1", "unknown"), seen  # glibc's own threshold, not ours


def _dynamic_loader() -> str | None:
  found = sorted(glob.glob("/lib64/ld-linux-*.so.*") + glob.glob("/lib/*/ld-linux-*.so.*"))
  return found[0] if found else None


@pytest.mark.skipif(_dynamic_loader() is None, reason="no glibc dynamic loader found")
def test_tunables_are_known_to_this_glibc():
  """glibc ignores a tunable it does not know: each name and value in MALLOC_TUNABLES
  is one this glibc parses (`ld.so --list-tunables`, glibc >= 2.33)."""
  env = dict(os.environ, GLIBC_TUNABLES=host.MALLOC_TUNABLES)
  listing = subprocess.run([_dynamic_loader(), "--list-tunables"], env=env,
                           capture_output=True, text=True, timeout=60)
  if listing.returncode != 0 or "glibc.malloc" not in listing.stdout:
    pytest.skip("this glibc cannot list its tunables")
  values = {}
  for line in listing.stdout.splitlines():  # "glibc.malloc.top_pad: 0x4000000 (min: ...)"
    name, _, rest = line.partition(":")
    values[name.strip()] = (rest.split() or [""])[0]
  for tunable in host.MALLOC_TUNABLES.split(":"):
    name, value = tunable.split("=")
    assert values.get(name) == hex(int(value)), (tunable, values.get(name))
