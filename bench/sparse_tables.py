#!/usr/bin/env python3
"""Writes the SpGEMM peers table of docs/benchmarks.md from bench/results/spgemm.json (written by
repro/sparse/run: bench_spgemm and bench/peers/spgemm.py), between the page markers
`<!-- spgemm-peers table: begin -->` and `<!-- spgemm-peers table: end -->`: at R-MAT scale 14,
each peer's time over `hash`'s on 2 threads, with the issue's target checked."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "repro"))
from readme_table import write_named_tables  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GRAPH = "rmat:14"
# (label, threads, where its time is, key, target ratio or None)
PEERS = (("Eigen 3.4 (same binary)", 1, "seconds", "eigen", 1.5),
         ("scipy.sparse (`csr_matmat`)", 1, "peer_seconds", "scipy", 2.0),
         ("MKL (`mkl_sparse_spmm`)", 2, "peer_seconds", "mkl", 0.8),
         ("our outer product (ESC)", 2, "seconds", "esc", 2.0),
         ("our inner product", 2, "seconds", "inner", 3.0))


def spgemm_peers_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/spgemm.json")))
    row = next(x for x in r["rows"] if x["graph"] == GRAPH)
    lines = [f"R-MAT scale 14 ({row['rows']} rows, {row['flops'] / 1e6:.1f}M partial products, "
             f"{row['nnz_c'] / 1e6:.1f}M entries in C). Ratios are peer time over the time of `hash` on "
             f"{r['threads']} threads ({row['seconds']['hash'] * 1e3:.0f} ms):", "",
             "| peer | threads | ratio | target |", "|---|---:|---:|---|"]
    for label, threads, where, key, target in PEERS:
        seconds = row.get(where, {}).get(key)
        if seconds is None:
            lines.append(f"| {label} | {threads} | not run | ≥ {target:g}× |")
            continue
        ratio = seconds / row["seconds"]["hash"]
        lines.append(f"| {label} | {threads} | {ratio:.2f}× | ≥ {target:g}×: "
                     f"{'holds' if ratio >= target else 'does not hold'} |")
    return lines


def main():
    write_named_tables(os.path.join(ROOT, "docs/benchmarks.md"), [
        ("spgemm-peers", spgemm_peers_lines()),
    ])


if __name__ == "__main__":
    main()
