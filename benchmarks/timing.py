"""Interleaved timing of two callables on the same inputs, and their extra memory."""

import ctypes
import gc
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

# Calls slower than this get fewer repeats (the spread of a multi-second call is small anyway).
SLOW_CALL_S = 0.5


def _per_call(fn: Callable[[], Any], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calibrate(one_call_s: float, target_s: float) -> int:
    """Calls per timed batch so that one batch takes about target_s."""
    return max(1, min(10000, int(target_s / max(one_call_s, 1e-7))))


def compare(
    a: Callable[[], Any], b: Callable[[], Any], repeats: int, batch_s: float
) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Times a and b interleaved (a b a b ...), each repeat a batch of calls lasting about batch_s.

    One warm-up call each (first-call allocations, thread-pool start) also sizes the batches. Returns
    per-call statistics for each side: median, min, max and interquartile range in seconds, and repeats.
    """
    first_a, first_b = _per_call(a, 1), _per_call(b, 1)
    if max(first_a, first_b) > SLOW_CALL_S:
        repeats = min(repeats, 3)
    num_a, num_b = calibrate(first_a, batch_s), calibrate(first_b, batch_s)
    times_a: List[float] = []
    times_b: List[float] = []
    for _ in range(repeats):
        times_a.append(_per_call(a, num_a))
        times_b.append(_per_call(b, num_b))
    return summarize(times_a), summarize(times_b)


def summarize(times: List[float]) -> Dict[str, float]:
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "iqr": q[2] - q[0],
        "repeats": len(ordered),
    }


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _release_free_memory() -> None:
    # Freed blocks the allocator still holds would hide a call's needs: hand them back to the system first.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def extra_resident_bytes(fn: Callable[[], Any]) -> int:
    """Peak resident memory during one call of fn above the resident memory before it (Linux; -1 elsewhere).

    Free heap memory is returned to the system and the peak is reset through /proc/self/clear_refs first,
    so each call is measured on its own.
    """
    if not sys.platform.startswith("linux"):
        return -1
    gc.collect()
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return -1
    before = _rss_bytes("VmRSS")
    result = fn()
    peak = _rss_bytes("VmHWM")
    del result
    return max(0, peak - before)
