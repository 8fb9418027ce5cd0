"""Keep freed memory in the process: fewer page faults for the large tensors of CPU training.

glibc's ``malloc`` serves large blocks (attention scores, activations: megabytes each) with
``mmap`` and gives them back on ``free``, and trims the heap top whenever enough is free, so
every training step maps, zero-fills and unmaps the same memory again. PyTorch's CPU performance
guide recommends a caching allocator (jemalloc, tcmalloc) for this reason; without one, raising
glibc's mmap and trim thresholds has the same effect. Measured here (the demo's MiniLM, bf16, 2
cores, 30 steps, whole process): 38.5 s of wall time with 12 s of system time before, 33-36 s
with 4-9 s after. The cost: the process keeps its peak heap instead of returning it to the
system (peak RSS 2.96 GB before, 2.97-3.35 GB after).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
_LARGEST = 2**31 - 1  # mallopt takes an int
_TOP_PAD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; ``False`` (and no change) where that is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, _LARGEST),
            (M_TRIM_THRESHOLD, _LARGEST),
            (M_TOP_PAD, _TOP_PAD),
        )
    )
    log.debug("glibc malloc keeps freed memory: %s", done)
    return done
