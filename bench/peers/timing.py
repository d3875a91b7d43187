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


def paired_median_seconds(a, b, repeats):
    """The medians of a and b timed alternately (a, b, a, b, ...) after one warm-up call each, so
    that a drift of the machine affects both alike."""
    a()
    b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def lowrank_bench_results(root, program, args, threads):
    """Runs lowrank's build/bin/<program> with `args` plus --out into a temporary file, on `threads`
    threads, and returns the JSON it wrote: the lowrank side of a peer comparison, in the same run."""
    import json
    import os
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ours.json")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), LOWRANK_NUM_THREADS=str(threads))
        subprocess.run([os.path.join(root, "build/bin", program), *args, "--out", out], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)
