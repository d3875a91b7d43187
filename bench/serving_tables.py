#!/usr/bin/env python3
"""Writes the serving tables of docs/benchmarks.md from the committed results, each between its
page markers `<!-- NAME table: begin -->` and `<!-- NAME table: end -->`:
  prefix-cache     bench/results/prefix_cache.json (`bench_prefix_cache --json`): the engine with
                   and without automatic prefix caching, on a shared-prefix and a distinct workload
  paged-attention  bench/results/paged_attention.json: paged decode attention against the
                   gathered path, one case per `bench_paged_attention --json` run
  paged-adapters   bench/results/serve_paged_{1000,5000}.json (`bench_serve --runs slora,paged
                   --json`): adapters paged in and out of the pool against all resident

  serving_tables.py --collect-paged-attention OUT.json < the runs' JSON objects, one after another"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "repro"))
from readme_table import write_atomic, write_named_tables  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The issue's target: a shared system prompt prefills at least this many times fewer tokens.
PREFILL_TARGET = 5.0


def prefix_cache_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/prefix_cache.json")))
    lines = [f"{r['workload']}; {r['threads']}.", "",
             "| workload | cache | prefilled tokens | hit rate | mean TTFT | wall | generated tok/s |",
             "|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        hit = f"{x['hit_rate']:.1%}" if x["hit_rate"] else "0"
        lines.append(f"| {x['workload']} | {'on' if x['prefix_caching'] else 'off'} | {x['prefilled_tokens']:,} | "
                     f"{hit} | {x['ttft_mean_s']:.3f} s | {x['wall_s']:.2f} s | {x['tokens_per_s']:,.0f} |")
    reduction = r["shared_prefill_reduction"]
    lines += ["", f"- Shared prefix: {reduction:.1f}× fewer prefilled tokens (target ≥ {PREFILL_TARGET:g}×: "
              f"{'met' if reduction >= PREFILL_TARGET else 'not met'}), {r['shared_ttft_speedup']:.1f}× lower mean TTFT.",
              f"- Nothing shared: throughput with the cache {r['distinct_throughput_ratio']:.3f}× without.",
              f"- Greedy outputs equal with and without the cache: {'yes' if r['outputs_equal'] else 'no'}."]
    return lines


def collect_paged_attention(dst, text):
    """The JSON objects of several `bench_paged_attention --json` runs, concatenated, into one file."""
    decoder, cases, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        case, i = decoder.raw_decode(text, i)
        cases.append(case)
    if not cases:
        raise SystemExit("serving_tables.py: no bench_paged_attention JSON on stdin")
    write_atomic(dst, json.dumps({"benchmark": "paged_attention", "cases": cases}, indent=2) + "\n")


def paged_attention_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/paged_attention.json")))
    first = r["cases"][0]
    lines = [f"{first['heads']} query heads over {first['kv_heads']} KV heads of {first['head_dim']}, pages of "
             f"{first['page_tokens']} tokens; each case one run of `bench_paged_attention --json`.", "",
             "| rows | lengths | tokens | dtype | threads | paged | gathered | gathered / paged | max \\|diff\\| |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        lines.append(f"| {c['rows']} | {c['min_len']}…{c['max_len']} | {c['tokens']:,} | {c['dtype']} | {c['threads']} | "
                     f"{c['paged_ms']:.1f} ms | {c['padded_ms']:.1f} ms | **{c['speedup']:.1f}×** | "
                     f"{c['max_abs_diff']:.1e} |")
    return lines


# Throughput of all-resident over paged within this band (S-LoRA: paging costs little).
PAGED_TARGET = 0.10


def paged_adapters_lines():
    lines = ["| adapters | run | requests/s | tokens/s | TTFT p50 / p99 | adapter loads | evictions |",
             "|---|---|---:|---:|---|---:|---:|"]
    ratios = []
    for count in (1000, 5000):
        r = json.load(open(os.path.join(ROOT, f"bench/results/serve_paged_{count}.json")))
        for key, label in (("slora", "all resident"), ("paged", "paged")):
            x = r["runs"][key]
            loads = re.search(r"(\d+) adapter loads", x["note"]).group(1)
            evictions = re.search(r"(\d+) evictions", x["note"]).group(1)
            lines.append(f"| {count} | {label} | {x['requests_per_s']:.1f} | {x['tokens_per_s']:.0f} | "
                         f"{x['ttft_p50_s']:.2f} / {x['ttft_p99_s']:.2f} s | {loads} | {evictions} |")
        ratios.append((count, r["ratios"]["slora_over_paged"]["requests_per_s"]))
    held = all(abs(ratio - 1) <= PAGED_TARGET for _, ratio in ratios)
    lines += ["", "Throughput resident / paged: " + ", ".join(f"{ratio:.3f} at {count} adapters" for count, ratio in ratios)
              + f" (target: within {PAGED_TARGET:.0%}: {'met' if held else 'not met'})."]
    return lines


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--collect-paged-attention":
        return collect_paged_attention(sys.argv[2], sys.stdin.read())
    write_named_tables(os.path.join(ROOT, "docs/benchmarks.md"), [
        ("prefix-cache", prefix_cache_lines()),
        ("paged-attention", paged_attention_lines()),
        ("paged-adapters", paged_adapters_lines()),
    ])


if __name__ == "__main__":
    main()
