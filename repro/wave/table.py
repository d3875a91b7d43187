#!/usr/bin/env python3
"""The table of repro/wave from its result files (standard library only).

  table.py --collect TRAIN_JSON OUT --lr LR [--seed S] [--compress COMPRESS_JSON]
      keep the fields of one run that the table needs (a small committed file)
  table.py RESULTS --best-lr SIZE METHOD
      print the learning rate of the grid whose run had the lowest validation error
  table.py RESULTS --readme README.md --svg results.svg
      write the table between the README's markers, and the figure
"""
import argparse
import glob
import json
import math
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readme_table import replace_between_markers, write_atomic  # noqa: E402

METHODS = ["dense", "cp4", "cp8", "cp16", "cp48", "posthoc4", "posthoc8", "posthoc16"]
LABELS = {
    "dense": "dense",
    "cp4": "CP R=4 (a priori)",
    "cp8": "CP R=8 (a priori)",
    "cp16": "CP R=16 (a priori)",
    "cp48": "CP R=48 (a priori)",
    "posthoc4": "CP R=4 post hoc",
    "posthoc8": "CP R=8 post hoc",
    "posthoc16": "CP R=16 post hoc",
}


def collect(args):
    with open(args.collect[0]) as f:
        t = json.load(f)
    out = {
        "conv": t["conv"],
        "rank": t["rank"],
        "parameters": t["parameters"],
        "inner_conv_parameters": t["inner_conv_parameters"],
        "steps": t["steps"],
        "train_samples": t["train_samples"],
        "lr": float(args.lr),
        "train_relative_l2": t["train"]["relative_l2"],
        "eval_relative_l2": t["test"]["relative_l2"],
        "eval_samples": t["test"]["samples"],
        "persistence_relative_l2": t["test"]["persistence_relative_l2"],
    }
    if args.seed is not None:
        out["seed"] = int(args.seed)
    if args.compress:
        with open(args.compress) as f:
            c = json.load(f)
        out["kernel_errors"] = c["kernel_errors"]
        out["dense_inner_conv_parameters"] = c["dense_inner_conv_parameters"]
    write_atomic(args.collect[1], json.dumps(out, indent=1) + "\n")


def tune_runs(results, size, method):
    """The grid's runs of one size and method, each with its rate as the grid spells it (the file name)."""
    runs = []
    for path in glob.glob(os.path.join(results, "tune", f"{size}-{method}-lr*.json")):
        with open(path) as f:
            run = json.load(f)
        run["lr_text"] = re.match(r".*-lr(.+)\.json$", os.path.basename(path)).group(1)
        runs.append(run)
    return runs


def best_lr(results, size, method):
    runs = tune_runs(results, size, method)
    if not runs:
        sys.exit(f"no tuning results for size {size}, method {method} in {results}/tune")
    return min(runs, key=lambda r: r["eval_relative_l2"])["lr_text"]


def load_main(results):
    rows = {}
    for path in glob.glob(os.path.join(results, "*.json")):
        m = re.match(r"(\d+)-s(\d+)-(\w+)\.json$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            rows.setdefault((int(m.group(1)), m.group(3)), []).append(json.load(f))
    return rows


def fmt_lr(x):
    return f"{x:g}"


def mean(xs):
    return sum(xs) / len(xs)


def build(args):
    rows = load_main(args.results)
    if not rows:
        sys.exit(f"no results in {args.results}")
    sizes = sorted({n for n, _ in rows})
    dense_params = {n: rows[(n, "dense")][0]["inner_conv_parameters"] for n in sizes if (n, "dense") in rows}
    lines = [
        "| train samples | method | inner conv params | fewer | lr (tuned) | train rel. L2 | test rel. L2 | gap (test − train) | seeds |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for n in sizes:
        for method in METHODS:
            runs = rows.get((n, method))
            if not runs:
                continue
            p = runs[0]["inner_conv_parameters"]
            train = [r["train_relative_l2"] for r in runs]
            test = [r["eval_relative_l2"] for r in runs]
            gap = [b - a for a, b in zip(train, test)]
            summary[(n, method)] = {"test": mean(test), "gap": mean(gap), "params": p, "tests": test}
            spread = lambda xs: f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else ""
            fewer = dense_params.get(n, p) / p
            lines.append(
                f"| {n} | {LABELS[method]} | {p} | {fewer:.1f}× | {fmt_lr(runs[0]['lr'])} | {mean(train):.4f} | "
                f"{mean(test):.4f}{spread(test)} | {mean(gap):+.4f} | {len(runs)} |"
            )
    persistence = next(iter(rows.values()))[0]["persistence_relative_l2"]
    lines.append("")
    lines.append(
        f"Test errors are relative L2, ‖Ŷ − Y‖/‖Y‖ over the {next(iter(rows.values()))[0]['eval_samples']} test "
        f"samples; predicting no change (ŷ = u^t) scores {persistence:.4f}. Mean over seeds, ± their standard "
        "deviation."
    )
    claims = claim_lines(summary, sizes)
    text = "\n".join(lines + [""] + claims)
    if args.readme:
        replace_between_markers(args.readme, text)
    else:
        print(text)
    if args.svg:
        write_svg(args.svg, summary, sizes)


def claim_lines(summary, sizes):
    out = ["| claim (paper) | ours | holds |", "|---|---|---|"]
    big, small = max(sizes), min(sizes)
    dense = summary.get((big, "dense"))
    if dense and any((big, m) in summary for m in ("cp4", "cp8", "cp16", "cp48")):
        ok = [
            m
            for m in ("cp4", "cp8", "cp16", "cp48")
            if (big, m) in summary
            and dense["params"] / summary[(big, m)]["params"] >= 5
            and summary[(big, m)]["test"] <= 1.10 * dense["test"]
        ]
        best = min(
            (m for m in ("cp4", "cp8", "cp16", "cp48") if (big, m) in summary), key=lambda m: summary[(big, m)]["test"]
        )
        ratio = summary[(big, best)]["test"] / dense["test"]
        out.append(
            f"| CP with ≥5× fewer conv parameters within 10% of dense test error at n={big} | best CP "
            f"({LABELS[best]}, {dense['params'] / summary[(big, best)]['params']:.0f}× fewer): "
            f"{ratio:.2f}× dense's error | {'yes' if ok else 'no'} |"
        )
    d_small = summary.get((small, "dense"))
    if d_small:
        gaps = {m: summary[(small, m)]["gap"] for m in ("cp4", "cp8", "cp16", "cp48") if (small, m) in summary}
        smaller = [m for m, g in gaps.items() if g < d_small["gap"]]
        out.append(
            f"| CP has a smaller train/test gap at n={small} | dense {d_small['gap']:+.4f}; "
            + ", ".join(f"R={m[2:]} {g:+.4f}" for m, g in gaps.items())
            + f" | {'yes' if len(smaller) == len(gaps) else ('partly' if smaller else 'no')} |"
        )
    for n in sizes:
        pairs = [(r, summary.get((n, f"cp{r}")), summary.get((n, f"posthoc{r}"))) for r in (4, 8, 16)]
        pairs = [(r, a, p) for r, a, p in pairs if a and p]
        if not pairs:
            continue
        wins = [r for r, a, p in pairs if a["test"] <= p["test"]]
        out.append(
            f"| a-priori CP ≥ post-hoc CP at equal rank (n={n}) | "
            + ", ".join(f"R={r}: {a['test']:.4f} vs {p['test']:.4f}" for r, a, p in pairs)
            + f" | {'yes' if len(wins) == len(pairs) else ('partly' if wins else 'no')} |"
        )
    return out


def write_svg(path, summary, sizes):
    # Test error against inner-conv parameters (log scale), one panel per training-set size.
    w, h, pad = 360, 260, 48
    colors = {"dense": "#222", "cp": "#1f77b4", "posthoc": "#d62728"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(sizes)}" height="{h + 30}" font-family="sans-serif" font-size="11">']
    errs = [v["test"] for v in summary.values()]
    ps = [v["params"] for v in summary.values()]
    lo_e, hi_e = 0, max(errs) * 1.1
    lo_p, hi_p = math.log10(min(ps) / 1.5), math.log10(max(ps) * 1.5)
    for k, n in enumerate(sizes):
        x0 = k * w
        X = lambda p: x0 + pad + (math.log10(p) - lo_p) / (hi_p - lo_p) * (w - pad - 12)
        Y = lambda e: h - pad + 10 - (e - lo_e) / (hi_e - lo_e) * (h - pad - 10)
        parts.append(f'<text x="{x0 + w / 2}" y="14" text-anchor="middle" font-weight="bold">n = {n} training samples</text>')
        parts.append(f'<line x1="{x0 + pad}" y1="{Y(0)}" x2="{x0 + w - 12}" y2="{Y(0)}" stroke="#888"/>')
        parts.append(f'<line x1="{x0 + pad}" y1="{Y(0)}" x2="{x0 + pad}" y2="{Y(hi_e)}" stroke="#888"/>')
        for t in range(5):
            e = hi_e * t / 4
            parts.append(f'<text x="{x0 + pad - 4}" y="{Y(e) + 4}" text-anchor="end">{e:.3f}</text>')
        for p in (1e3, 1e4, 1e5):
            if lo_p <= math.log10(p) <= hi_p:
                parts.append(f'<text x="{X(p)}" y="{Y(0) + 14}" text-anchor="middle">{int(p)}</text>')
        parts.append(f'<text x="{x0 + w / 2 + 18}" y="{h + 12}" text-anchor="middle">inner conv parameters (log)</text>')
        for family in ("cp", "posthoc"):
            pts = [
                (summary[(n, f"{family}{r}")]["params"], summary[(n, f"{family}{r}")]["test"])
                for r in (4, 8, 16, 48)
                if (n, f"{family}{r}") in summary
            ]
            if pts:
                parts.append('<polyline fill="none" stroke="%s" points="%s"/>' % (colors[family], " ".join(f"{X(p):.1f},{Y(e):.1f}" for p, e in pts)))
                for p, e in pts:
                    parts.append(f'<circle cx="{X(p):.1f}" cy="{Y(e):.1f}" r="3" fill="{colors[family]}"/>')
        if (n, "dense") in summary:
            d = summary[(n, "dense")]
            parts.append(f'<rect x="{X(d["params"]) - 3:.1f}" y="{Y(d["test"]) - 3:.1f}" width="6" height="6" fill="{colors["dense"]}"/>')
            parts.append(f'<line x1="{x0 + pad}" y1="{Y(1.1 * d["test"]):.1f}" x2="{x0 + w - 12}" y2="{Y(1.1 * d["test"]):.1f}" stroke="#999" stroke-dasharray="3,3"/>')
        ly = 30
        for label, color in (("dense", colors["dense"]), ("CP a priori", colors["cp"]), ("CP post hoc", colors["posthoc"]), ("dense +10%", "#999")):
            parts.append(f'<rect x="{x0 + w - 110}" y="{ly - 8}" width="10" height="3" fill="{color}"/><text x="{x0 + w - 96}" y="{ly}">{label}</text>')
            ly += 13
        parts.append(f'<text x="{x0 + 12}" y="{(h) / 2}" transform="rotate(-90 {x0 + 12} {h / 2})" text-anchor="middle">test relative L2</text>')
    parts.append("</svg>")
    write_atomic(path, "\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?")
    ap.add_argument("--collect", nargs=2)
    ap.add_argument("--lr")
    ap.add_argument("--seed")
    ap.add_argument("--compress")
    ap.add_argument("--best-lr", nargs=2)
    ap.add_argument("--readme")
    ap.add_argument("--svg")
    args = ap.parse_args()
    if args.collect:
        collect(args)
    elif args.best_lr:
        print(best_lr(args.results, args.best_lr[0], args.best_lr[1]))
    else:
        build(args)


if __name__ == "__main__":
    main()
