"""Process-level host settings for the jaxgen command and benchmarks.

XLA's CPU runtime mallocs and frees each step's temporaries. With glibc's
defaults, blocks of a megabyte or more come from fresh mmaps, so every step
pays page faults for memory it has just returned, on 4 KiB pages. Keeping
those blocks in the heap and letting the heap use transparent huge pages
makes CPU training markedly faster (2 cores, fp32): the Transformer CPU recipe
60 -> 42 ms per step, the LSTM recipe ~130 -> ~105 ms per step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# The same settings as GLIBC_TUNABLES, which glibc reads only at process start.
MALLOC_TUNABLES = ("glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:"
                   "glibc.malloc.trim_threshold=268435456:glibc.malloc.top_pad=67108864")

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def restart_with_malloc_tunables() -> None:
  """Re-executes this process once with `MALLOC_TUNABLES` (Linux only).

  Called first thing by the command line, before JAX is imported. Does
  nothing when GLIBC_TUNABLES is already set (by the user, or by the restart
  itself), so a user's own allocator settings win.
  """
  if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
    return
  os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
  try:
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
  except OSError:
    tune_malloc()  # could not restart: keep what can be set at run time


def tune_malloc() -> bool:
  """The part of `MALLOC_TUNABLES` that can be set at run time (no huge pages).

  Raises the mmap and trim thresholds so XLA's per-step buffers stay in the
  heap. Returns whether glibc accepted the settings; elsewhere a no-op.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's ceiling on 64-bit
  ok &= mallopt(_M_TRIM_THRESHOLD, 256 << 20)
  ok &= mallopt(_M_TOP_PAD, 64 << 20)
  return bool(ok)
