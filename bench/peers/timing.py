"""Timing shared by the peer benchmarks (the same rule as bench/timing.h)."""
import statistics
import time


def median_seconds(fn, repeats):
    """The median wall time of `repeats` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
