"""Interleaved timing of two callables on the same inputs."""

import statistics
import time
from typing import Any, Callable, Dict, List, Tuple


def _per_call(fn: Callable[[], Any], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calibrate(fn: Callable[[], Any], target_s: float) -> int:
    """Calls per timed batch so that one batch takes about target_s."""
    one = _per_call(fn, 1)
    return max(1, min(10000, int(target_s / max(one, 1e-7))))


def compare(
    a: Callable[[], Any], b: Callable[[], Any], repeats: int, batch_s: float
) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Times a and b interleaved (a b a b ...), each repeat a batch of calls lasting about batch_s.

    Returns per-call statistics for each: median, min, max and the interquartile range, in seconds.
    """
    for fn in (a, b):  # warm-up: first-call allocations, thread-pool start
        fn()
        fn()
    num_a, num_b = calibrate(a, batch_s), calibrate(b, batch_s)
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
