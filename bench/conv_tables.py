#!/usr/bin/env python3
"""Writes two tables of docs/benchmarks.md from the committed results, each between its page
markers `<!-- NAME table: begin -->` and `<!-- NAME table: end -->`:
  cp-conv     bench/results/cp_conv.json (`bench_cp_conv`): the a-priori CP convolution against the
              dense convolution, forward + backward, with the issue's target checked
  group-conv  bench/results/group_conv.json (`bench_group_conv`): the Monte-Carlo group convolution
              against its sample count, with the fitted slope"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "repro"))
from readme_table import write_named_tables  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The target: at rank 8, the CP path ≥ 1.5× the dense convolution.
TARGET_RANK, TARGET_RATIO = 8, 1.5


def cp_conv_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/cp_conv.json")))
    lines = [f"{r['channels']} → {r['channels']} channels on {r['size']} × {r['size']} maps, batch {r['batch']}, "
             f"{r['dtype']}, {r['threads']} threads, interleaved medians of {r['repeats']}.", "",
             "| k | R | dense ms | CP ms | dense / CP | parameters dense → CP | max \\|diff\\| |",
             "|---:|---:|---:|---:|---:|---|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['kernel_size']} | {x['rank']} | {x['dense_ms']:.1f} | {x['cp_ms']:.1f} | "
                     f"{x['dense_over_cp']:.2f}× | {x['dense_parameters']} → {x['cp_parameters']} | "
                     f"{x['max_abs_diff']:.1e} |")
    at_rank = [x for x in r["rows"] if x["rank"] == TARGET_RANK]
    met = [str(x["kernel_size"]) for x in at_rank if x["dense_over_cp"] >= TARGET_RATIO]
    missed = [f"{x['kernel_size']} ({x['dense_over_cp']:.2f}×)" for x in at_rank if x["dense_over_cp"] < TARGET_RATIO]
    lines += ["", f"Target ≥ {TARGET_RATIO}× the dense convolution at R = {TARGET_RANK}: met for k = "
              f"{', '.join(met) or 'none'}" + (f"; missed for k = {', '.join(missed)}" if missed else "") + "."]
    return lines


def group_conv_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/group_conv.json")))
    lines = [f"{r['channels']} → {r['channels']} channels, {r['kernel_size']} × {r['kernel_size']} windows, "
             f"{r['output_elements']} output elements, {r['size']} × {r['size']} maps, batch {r['batch']}, "
             f"{r['threads']} threads, medians of {r['repeats']}.", "",
             "| M | ms | µs per input element |", "|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['samples']} | {x['ms']:.2f} | {x['ms'] * 1e3 / x['samples']:.0f} |")
    samples = [x["samples"] for x in r["rows"]]
    lines += ["", f"Slope of log time on log M over {min(samples)} … {max(samples)}: {r['slope']:.2f}."]
    return lines


def main():
    write_named_tables(os.path.join(ROOT, "docs/benchmarks.md"), [
        ("cp-conv", cp_conv_lines()),
        ("group-conv", group_conv_lines()),
    ])


if __name__ == "__main__":
    main()
