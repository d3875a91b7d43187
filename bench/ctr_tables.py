#!/usr/bin/env python3
"""Writes the DCNv2 table of docs/benchmarks.md from bench/results/ctr.json (written by
bench/peers/ctr.py, which runs bench_ctr first), between the page markers
`<!-- ctr table: begin -->` and `<!-- ctr table: end -->`, with the issue's targets checked."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "repro"))
from readme_table import write_named_tables  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The targets: lowrank / the faster PyTorch form at batch 1 and 4096; AFM at 3× at 512.
TARGETS = {1: 3.0, 4096: 1.0}
AFM_TARGET_BATCH, AFM_TARGET = 512, 1.5


def duration(seconds):
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.3g} ms"


def ctr_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/ctr.json")))
    lines = [f"Dense {r['dense_parameters']:,} parameters, AFM {r['afm3x_parameters']:,} ({r['factor']:.2f}× fewer); "
             f"{r['threads']} threads, medians of {r['repeats']}; PyTorch {r['pytorch']}; largest logit difference "
             f"{r['max_logit_diff']:.1e}.", "",
             "| batch | lowrank dense | lowrank AFM 3× | PyTorch, DeepCTR's cross | PyTorch, GEMM cross "
             "| lowrank / faster PyTorch | dense / AFM |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['batch']} | {duration(x['dense_seconds'])} | {duration(x['afm3x_seconds'])} | "
                     f"{duration(x['pytorch_deepctr_seconds'])} | {duration(x['pytorch_linear_cross_seconds'])} | "
                     f"{x['ours_vs_pytorch']:.2f}× | {x['dense_seconds'] / x['afm3x_seconds']:.2f}× |")
    lines.append("")
    for x in r["rows"]:
        if x["batch"] in TARGETS:
            t = TARGETS[x["batch"]]
            lines.append(f"- Batch {x['batch']}, lowrank ≥ {t:g}× the faster PyTorch form: {x['ours_vs_pytorch']:.2f}× — "
                         f"{'holds' if x['ours_vs_pytorch'] >= t else 'does not hold'} in this run.")
        if x["batch"] == AFM_TARGET_BATCH:
            ratio = x["dense_seconds"] / x["afm3x_seconds"]
            lines.append(f"- Batch {x['batch']}, AFM at 3× ≥ {AFM_TARGET:g}× faster than dense: {ratio:.2f}× — "
                         f"{'holds' if ratio >= AFM_TARGET else 'does not hold'}.")
    return lines


def main():
    write_named_tables(os.path.join(ROOT, "docs/benchmarks.md"), [
        ("ctr", ctr_lines()),
    ])


if __name__ == "__main__":
    main()
