"""Keep freed memory in the process, so a per-scan path that allocates the same arrays every scan stops paying
the kernel for fresh pages.

glibc hands an array of more than its mmap threshold (128 KiB at first, raised by each such block freed, up to
32 MiB) fresh zeroed pages from the kernel and returns them when it is freed, and gives back the top of the
heap once more than the trim threshold is free there. numpy's temporaries of a 262,144-point scan (1-2 MiB
each) therefore page-fault on every scan: about 10,000 minor faults, a quarter to a half of its
pre-processing's CPU time on the 2-core VM (docs/geometry.md). `keep_freed_memory` sets both thresholds once,
so freed blocks are reused; the process's peak memory stays the same, it is only not given back between scans.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory"]

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap: glibc's largest mmap threshold on 64-bit, 32 MiB (a dense
# (6, 262144, 2) float32 array is 12 MiB).
MMAP_THRESHOLD = 32 << 20
# Free memory kept at the top of the heap before any is returned, and the extra asked for each time it grows.
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (module docstring); False where the C library is
    not glibc (musl, macOS), which is left as it is."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(
        mallopt(parameter, value) == 1
        for parameter, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
