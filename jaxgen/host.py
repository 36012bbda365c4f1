"""Process-level host settings for the jaxgen command and benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
  """Keeps XLA's CPU buffers in the heap instead of fresh mmaps on every step.

  XLA's CPU runtime mallocs and frees each step's temporaries; glibc serves
  blocks of a megabyte or more with mmap/munmap, so every step pays page
  faults for memory it just returned. Raising the mmap and trim thresholds
  (as GLIBC_TUNABLES=glibc.malloc.mmap_threshold=... would) keeps those pages
  mapped: measured 60 -> 42 ms per step for the CPU recipe on 2 cores, system
  time 4.1 s -> 0.6 s per 100 steps. Returns whether the settings applied
  (glibc on Linux only; elsewhere a no-op).
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
