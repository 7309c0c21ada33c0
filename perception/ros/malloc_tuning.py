"""Keep camera-sized buffers on the heap (glibc): a 1080p take costs 1 ms, not 9.

Why: every received camera message is a fresh multi-megabyte buffer (rclpy
copies the DDS sample into a new bytes object per take). glibc serves blocks
above its mmap threshold with a fresh mmap, and its dynamic threshold only
rises to the size of a freed block, so same-size blocks, exactly what a
camera sends, are mmapped and page-faulted anew on every message: measured
here, a raw take of a 1920x1080 bgr8 Image cost 9.4 ms with the default and
1.3 ms with a fixed threshold above the frame size (bench/bench_callback.py).
A fixed threshold of 32 MiB (glibc's upper limit; a 4K bgr8 frame is 25 MB)
and a trim threshold twice that (what glibc's own dynamic rule would pick)
keep the freed frames for reuse; memory use stays bounded by the frames in
flight plus at most the trim threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["keep_large_buffers_on_heap"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES

_done: bool | None = None


def keep_large_buffers_on_heap() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where the
    C library is not glibc or refuses (nothing changes then)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _done
