"""Keep the CPU allocator from handing a render's activations back to the OS between steps.

glibc serves blocks over its mmap threshold with fresh ``mmap`` pages and trims the heap top on free, so each
optimisation step page-faults its large activations back in: zero-filling the 8x64x112x112 gradient of
GoogLeNet's first max-pool took 34 ms of a step of about 300 ms (torch.profiler on this machine's CPU). Raising the
mmap threshold to glibc's maximum (32 MiB) and never trimming keeps those pages mapped for the next step.
jemalloc (LD_PRELOAD) was slower here. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit

_done = False


def keep_freed_memory() -> bool:
    """Once per process; True when glibc accepted both settings."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _done
