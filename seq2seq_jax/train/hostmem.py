"""Host memory: make glibc reuse the memory XLA's CPU executables free at every run."""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt options


def tune_host_malloc() -> bool:
  """Makes glibc keep and reuse freed memory instead of handing it back to the kernel.

  XLA on CPU allocates every executable's temporaries (here ~360 MB a training step)
  anew on each run. glibc serves blocks over 32 MB (and every block of a thread's arena)
  with fresh `mmap`s and unmaps them when freed, so each step faults in and zeroes
  ~90,000 new pages: ~0.19 s of kernel time per step. One arena, a 1 GiB mmap threshold
  and no trimming make later steps reuse the same memory (0 page faults). Call it first
  thing in a process, before JAX allocates; the equivalent environment setting is
  `GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=1073741824:`
  `glibc.malloc.trim_threshold=4294967295`. Returns whether glibc accepted it."""
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):
    return False
  settings = [(_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 2**31 - 1)]
  return all(mallopt(option, value) == 1 for option, value in settings)
