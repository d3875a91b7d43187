"""Mamba's selective scan: lowrank's CPU kernel against transformers' pure-PyTorch path, in one run.

transformers (models/mamba/modeling_mamba.py, mamba_selective_scan: the path MambaMixer takes
without the mamba-ssm CUDA kernels; use_mambapy False) discretises A and B for the whole sequence
at once, then loops over the positions in Python with one state update and one matmul per step.
That is timed here on bench_selective_scan's workload: float32, batch 1, D = 256 channels,
N = 16, L = 256, 1024, 4096, no D skip and no gate (the core recurrence both sides time), Δ =
softplus(N(0, 1) − 3), A = −exp(N(0, 1/4)), u, B, C ~ N(0, 1). lowrank's side is
build/bin/bench_selective_scan, run by this script just before, with the same thread count. Each
side reports medians of interleaved calls within its own process.
Target (Mixers II): the kernel ≥ 5× transformers' slow path.

Run with the peer stack (after scripts/build --target bench_selective_scan):
  .venv-peers/bin/python bench/peers/selective_scan.py [--threads 2] [--repeats 5]
      [--out bench/peers/results/selective_scan.json]
"""
import argparse
import json
import os
import sys

import torch
import transformers
from transformers.models.mamba.modeling_mamba import mamba_selective_scan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import lowrank_bench_results, median_seconds  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "bench/peers/results/selective_scan.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ours = lowrank_bench_results(ROOT, "bench_selective_scan", ["--repeats", str(args.repeats)], args.threads)

    D, N = ours["channels"], ours["state"]
    rows = []
    print(f"{'L':<6} {'lowrank_ms':>11} {'transformers_ms':>16} {'tf/lowrank':>11} {'max_diff':>10}")
    for row in ours["rows"]:
        L = row["L"]
        torch.manual_seed(1)
        u = torch.randn(1, D, L)
        dt = torch.nn.functional.softplus(torch.randn(1, D, L) - 3)
        A = -torch.exp(torch.randn(D, N) * 0.5)
        B = torch.randn(1, N, L)
        C = torch.randn(1, N, L)
        with torch.no_grad():
            y = mamba_selective_scan(u, dt, A, B, C)
            t = median_seconds(lambda: mamba_selective_scan(u, dt, A, B, C), args.repeats)
        # A float64 loop on the same inputs checks that the peer computes the recurrence we time.
        h = torch.zeros(D, N, dtype=torch.float64)
        ref = torch.empty(D, L, dtype=torch.float64)
        ud, dtd, Ad, Bd, Cd = (x.double() for x in (u[0], dt[0], A, B[0], C[0]))
        for i in range(L):
            h = torch.exp(dtd[:, i, None] * Ad) * h + dtd[:, i, None] * Bd[None, :, i] * ud[:, i, None]
            ref[:, i] = h @ Cd[:, i]
        diff = (y[0].double() - ref).abs().max().item()
        ratio = t * 1e3 / row["kernel_forward_ms"]
        print(f"{L:<6} {row['kernel_forward_ms']:>11.3f} {t * 1e3:>16.2f} {ratio:>11.1f} {diff:>10.2e}")
        rows.append({"L": L, "lowrank_kernel_ms": row["kernel_forward_ms"], "transformers_ms": t * 1e3,
                     "transformers_over_lowrank": ratio, "transformers_max_abs_diff_vs_float64": diff})
    out = {"benchmark": "selective_scan_peers", "dtype": "float32", "batch": 1, "channels": D, "state": N,
           "threads": args.threads, "repeats": args.repeats, "transformers": transformers.__version__,
           "torch": torch.__version__, "lowrank_avx2": ours["avx2"], "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
