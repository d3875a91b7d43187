#!/usr/bin/env python3
"""Writes the token-mixer table of docs/benchmarks.md ("Token mixers against exact attention") from
bench/results/mixers.json (written by `build/bin/bench_mixers --json`), between the page's
`<!-- mixers table: begin -->` and `<!-- mixers table: end -->` markers, with the issue's targets at
the longest length checked against the numbers."""
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "repro"))
from readme_table import write_atomic  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BEGIN, END = "<!-- mixers table: begin -->", "<!-- mixers table: end -->"
# The attention replacements the targets are about (Mixers I); the state-space and convolution
# mixers are listed too, for comparison.
ATTENTION_SIDE = ("fnet", "linformer", "local", "neighborhood", "performer", "ponet", "scatterbrain", "soft")


def fmt(x, digits):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def main():
    r = json.load(open(os.path.join(ROOT, "bench/results/mixers.json")))
    options = ", ".join(f"{k}: {json.dumps(v)}" for k, v in r["options"].items())
    lines = [
        f"Batch {r['batch']}, {r['heads']} heads × {r['head_dim']}, float32, "
        f"{'causal' if r['causal'] else 'bidirectional'}, {r['threads']} threads, median of {r['repeats']} "
        f"forward passes; peak memory is the rise of VmHWM over one forward in a fresh process. Options: "
        f"{options}; every other mixer at its defaults. Roofs of the same run: GEMM "
        f"{r['gemm_gflop_per_s']:.0f} GFLOP/s, triad {r['triad_gb_per_s']:.1f} GB/s.",
        "",
        "| n | mixer | ms | SDPA / this | materialised / this | peak MiB | memory / materialised's |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [x for x in r["rows"] if "skipped" not in x]
    for x in rows:
        lines.append(
            f"| {x['n']} | {x['mixer']} | {fmt(x['ms'], 1)} | {fmt(x.get('sdpa_over_this'), 2)} | "
            f"{fmt(x.get('materialised_over_this'), 2)} | {fmt(x.get('peak_mib'), 1)} | "
            f"{fmt(x.get('memory_vs_materialised'), 3)} |")
    for x in r["rows"]:
        if "skipped" in x:
            lines.append(f"| {x['n']} | {x['mixer']} | skipped: {x['skipped']} | | | | |")
    n = max(x["n"] for x in rows)
    at = {x["mixer"]: x for x in rows if x["n"] == n and x["mixer"] in ATTENTION_SIDE}
    fast = sorted(m for m, x in at.items() if x["sdpa_over_this"] >= 4)
    slow = sorted(m for m, x in at.items() if x["sdpa_over_this"] < 4)
    small = sorted(m for m, x in at.items() if x.get("memory_vs_materialised", 1) <= 0.10)
    large = sorted(m for m, x in at.items() if x.get("memory_vs_materialised", 1) > 0.10)
    lines += ["", f"Against the issue's targets at n = {n} (the attention replacements):",
              f"- ≥ 4× faster than SDPA: met by {', '.join(fast) or 'none'}"
              + ("; not by " + ", ".join(f"{m} {at[m]['sdpa_over_this']:.2f}×" for m in slow) if slow else "") + ".",
              f"- ≤ 10% of materialised attention's memory: met by {', '.join(small) or 'none'}"
              + (f"; not by {', '.join(large)}" if large else "") + "."]
    if "ponet" in at and "fnet" in at:
        ratio = at["ponet"]["ms"] / at["fnet"]["ms"]
        lines.append(f"- PoNet ≤ 1.5× FNet's time (the paper: \"slightly slower than FNet\"): {ratio:.2f}× here — "
                     f"{'met' if ratio <= 1.5 else 'not met'}.")
    path = os.path.join(ROOT, "docs/benchmarks.md")
    body = open(path).read()
    i, j = body.find(BEGIN), body.find(END)
    if i < 0 or j < i:
        sys.exit(f"{path}: no {BEGIN} … {END} markers")
    write_atomic(path, body[: i + len(BEGIN)] + "\n" + "\n".join(lines) + "\n" + body[j:])


if __name__ == "__main__":
    main()
