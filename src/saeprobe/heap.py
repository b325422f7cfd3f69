"""Keep a batch loop's resident memory flat: give freed heap pages back when it has grown.

A forward pass allocates tensors of many sizes, and each new batch shape fragments glibc's
heap: freed blocks stay resident, so a process's peak resident memory creeps up with the
number of distinct batch shapes it has seen (MiniLM on CPU, ``benchmarks/memory.py``: the bare
forward pass peaks 1.39x higher on 8x the documents). ``malloc_trim(0)`` hands the free pages
of every arena back to the OS, but the next batch then faults them back in, which cost ~7% of
extraction's throughput when done after every batch. :class:`HeapGuard` trims only when the
resident set has grown past a watermark set after the first batches, so a steady loop trims
rarely and its peak stays within a few percent of where it started. Fixing glibc's mmap
threshold instead (``MALLOC_MMAP_THRESHOLD_``) also keeps the peak flat but costs ~20% in
page faults on every large tensor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def trim() -> bool:
    """Return free heap pages to the OS (glibc's ``malloc_trim(0)``).

    Returns:
        True when memory was released; False when nothing was, or the C library (musl, macOS)
        has no ``malloc_trim`` (then this does nothing).
    """
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


def resident_bytes() -> int | None:
    """This process's resident set size in bytes (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class HeapGuard:
    """Call :meth:`step` after each batch; it trims the heap when the resident set has grown.

    The watermark is the largest resident size seen over the first ``warmup`` steps (the loop's
    working set); a later step that finds the process more than ``slack`` (a fraction) above it
    trims. Where the resident size or ``malloc_trim`` is unavailable, ``step`` does nothing.
    """

    def __init__(self, warmup: int = 3, slack: float = 0.03):
        self.warmup, self.slack = warmup, slack
        self.watermark = 0
        self.steps = self.trims = 0

    def step(self) -> bool:
        """Returns True when this step trimmed."""
        rss = resident_bytes()
        if rss is None or _malloc_trim() is None:
            return False
        self.steps += 1
        if self.steps <= self.warmup:
            self.watermark = max(self.watermark, rss)
            return False
        if rss > self.watermark * (1 + self.slack):
            trim()
            self.trims += 1
            return True
        return False
