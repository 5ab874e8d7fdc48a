"""Interleaved timing of two callables on the same inputs, and their extra memory (CPU or CUDA)."""

import ctypes
import gc
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import torch

# Calls slower than this get fewer repeats (the spread of a multi-second call is small anyway).
SLOW_CALL_S = 0.5


def _per_call(fn: Callable[[], Any], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _per_call_cuda(fn: Callable[[], Any], number: int) -> float:
    """Mean time of one call on the current CUDA device.

    The device is drained before each call, so calls never overlap and each is timed from an idle GPU; CUDA
    events recorded on the stream around the call then time it from its start (host-side work and launches
    included, since the start event fires as soon as it is recorded on the idle stream) to the end of the last
    kernel it queued. Synchronous host waits inside the call (e.g. a data-dependent output size) are included.
    """
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    total_ms = 0.0
    for _ in range(number):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        total_ms += start.elapsed_time(end)
    return total_ms / 1e3 / number


def calibrate(one_call_s: float, target_s: float) -> int:
    """Calls per timed batch so that one batch takes about target_s."""
    return max(1, min(10000, int(target_s / max(one_call_s, 1e-7))))


def compare(
    a: Callable[[], Any], b: Callable[[], Any], repeats: int, batch_s: float, device: str = "cpu"
) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Times a and b interleaved (a b a b ...), each repeat a batch of calls lasting about batch_s.

    One warm-up call each (first-call allocations, thread-pool start) also sizes the batches. Returns
    per-call statistics for each side: median, min, max and interquartile range in seconds, and repeats.
    On "cuda", every call is timed on its own with the device synchronised around it (see _per_call_cuda),
    after one further untimed call each: the first CUDA calls load kernels and grow the allocator's pools.
    """
    per_call = _per_call
    if device == "cuda":
        per_call = _per_call_cuda
        per_call(a, 1)
        per_call(b, 1)
    first_a, first_b = per_call(a, 1), per_call(b, 1)
    if max(first_a, first_b) > SLOW_CALL_S:
        repeats = min(repeats, 3)
    num_a, num_b = calibrate(first_a, batch_s), calibrate(first_b, batch_s)
    times_a: List[float] = []
    times_b: List[float] = []
    for _ in range(repeats):
        times_a.append(per_call(a, num_a))
        times_b.append(per_call(b, num_b))
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


def extra_cuda_bytes(fn: Callable[[], Any]) -> int:
    """Peak CUDA memory allocated during one call of fn above what was allocated before it (its output
    included), from the caching allocator's statistics of the current device.

    Counts tensors, not the allocator's cached-but-free blocks, so the figure does not depend on what earlier
    calls left in the cache; memory that libraries allocate outside the allocator (cuBLAS/cuDNN workspaces
    set up once) is not seen.
    """
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del result
    return max(0, peak - before)
