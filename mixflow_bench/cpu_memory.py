"""Keep freed CPU memory in the process, so that large tensors allocated again do not page-fault in again.

torch's CPU allocator has no cache: every tensor is a ``malloc``/``free``. glibc serves blocks above its mmap
threshold (adaptive, at most 32 MB) with a fresh ``mmap`` and returns them with ``munmap`` when freed, so a loop
that allocates a 37 MB activation per step (the CPU studies' ensembles: 18 models x 2,000 samples x 256 features)
pays the kernel's page faults and zeroing on every step. On the 2-core development machine that doubled the
studies' sampling time (0.60 s against 0.30 s per Euler step of the digits study's 18 models) and made an
out-of-place add of such a tensor 8x slower than the in-place one.

:func:`keep_freed_memory` raises glibc's mmap and trim thresholds (``mallopt``) so that such blocks come from the
heap and are reused. It changes where memory lives, not what is computed. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap
TRIM_THRESHOLD_BYTES = 2**31 - 1  # free heap top kept up to 2 GiB (mallopt takes an int)
DISABLE_ENV = "MIXFLOW_BENCH_KEEP_FREED_MEMORY"  # "0": leave glibc's defaults


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if both were set (False off Linux/glibc,
    or with ``MIXFLOW_BENCH_KEEP_FREED_MEMORY=0``)."""
    if not sys.platform.startswith("linux") or os.environ.get(DISABLE_ENV) == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
