#!/usr/bin/env python3
"""The table of repro/equivariance from its result files (standard library only).

  table.py --collect RUN_DIR OUT --preset P --lr LR --seed S   keep what the table needs
  table.py RESULTS --best-lr PRESET                           the grid's rate with the best val accuracy
  table.py RESULTS --readme README.md --svg results.svg       the table and the figure
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readme_table import replace_between_markers, write_atomic  # noqa: E402

LABELS = {"lie-gl2": "GL⁺(2) lifting + group conv", "lie-cnn": "plain CNN, same layout and size"}


def collect(args):
    run = args.collect[0]
    cfg = json.load(open(os.path.join(run, "model", "config.json")))
    train = json.load(open(os.path.join(run, "train.json")))
    val = json.load(open(run + ".val.json"))
    test = json.load(open(run + ".test.json"))
    with open(os.path.join(run, "model", "model.safetensors"), "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    params = 0
    for name, info in header.items():
        if name == "__metadata__" or name == "group_sample_counter":
            continue
        count = 1
        for d in info["shape"]:
            count *= d
        params += count
    out = {
        "preset": args.preset,
        "lr_text": args.lr,
        "seed": int(args.seed),
        "group": cfg["group"],
        "channels": cfg["channels"],
        "parameters": params,
        "steps": train["steps"],
        "val_accuracy": val["accuracy"],
        "test_accuracy": test["accuracy"],
        "test_ci95": test["ci95"],
        "test_examples": test["examples"],
    }
    write_atomic(args.collect[1], json.dumps(out, indent=1) + "\n")


def load(results):
    out = {}
    for path in glob.glob(os.path.join(results, "*.json")):
        with open(path) as f:
            out[os.path.basename(path)[:-5]] = json.load(f)
    return out


def best_lr(results, preset):
    runs = [r for name, r in load(results).items() if name.startswith(f"tune-{preset}-lr")]
    if not runs:
        sys.exit(f"no tuning results for {preset} in {results}")
    return max(runs, key=lambda r: r["val_accuracy"])["lr_text"]


def build(args):
    runs = load(args.results)
    rows, summary = [], {}
    rows.append("| model | parameters | lr (tuned) | val accuracy (identity pose) | test accuracy (random affine) | seeds |")
    rows.append("|---|---:|---:|---:|---:|---:|")
    for preset in ("lie-gl2", "lie-cnn"):
        rs = [r for name, r in runs.items() if re.match(rf"{preset}-s\d+$", name)]
        if not rs:
            continue
        val = [r["val_accuracy"] for r in rs]
        test = [r["test_accuracy"] for r in rs]
        sd = lambda xs: f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else ""
        summary[preset] = {"val": statistics.mean(val), "test": statistics.mean(test), "tests": test}
        rows.append(
            f"| {LABELS[preset]} | {rs[0]['parameters']} | {rs[0]['lr_text']} | {statistics.mean(val):.3f}{sd(val)} | "
            f"{statistics.mean(test):.3f}{sd(test)} | {len(rs)} |"
        )
    rows.append("")
    rows.append("| claim (paper) | ours | holds |")
    rows.append("|---|---|---|")
    if "lie-gl2" in summary and "lie-cnn" in summary:
        gap = 100 * (summary["lie-gl2"]["test"] - summary["lie-cnn"]["test"])
        every = all(a > b for a, b in zip(sorted(summary["lie-gl2"]["tests"]), sorted(summary["lie-cnn"]["tests"])))
        rows.append(
            f"| the equivariant model beats an equal-size CNN by ≥10 points under random affine maps | "
            f"{gap:+.1f} points (mean over seeds; every seed ahead: {'yes' if every else 'no'}) | "
            f"{'yes' if gap >= 10 else 'no'} |"
        )
    text = "\n".join(rows)
    if args.readme:
        replace_between_markers(args.readme, text)
    else:
        print(text)
    if args.svg and summary:
        write_svg(args.svg, summary)


def write_svg(path, summary):
    w, h, pad = 420, 240, 50
    colors = {"lie-gl2": "#1f77b4", "lie-cnn": "#888"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">']
    Y = lambda a: h - pad - a * (h - 2 * pad)
    parts.append(f'<line x1="{pad}" y1="{Y(0)}" x2="{w - 10}" y2="{Y(0)}" stroke="#888"/>')
    for t in range(6):
        a = t / 5
        parts.append(f'<text x="{pad - 4}" y="{Y(a) + 4}" text-anchor="end">{a:.1f}</text>')
        parts.append(f'<line x1="{pad}" y1="{Y(a)}" x2="{w - 10}" y2="{Y(a)}" stroke="#eee"/>')
    groups = [("val", "identity pose (val)"), ("test", "random affine (test)")]
    bw = 40
    for gi, (key, label) in enumerate(groups):
        x0 = pad + 30 + gi * 170
        for k, preset in enumerate(("lie-gl2", "lie-cnn")):
            if preset not in summary:
                continue
            a = summary[preset][key]
            x = x0 + k * (bw + 10)
            parts.append(f'<rect x="{x}" y="{Y(a):.1f}" width="{bw}" height="{Y(0) - Y(a):.1f}" fill="{colors[preset]}"/>')
            parts.append(f'<text x="{x + bw / 2}" y="{Y(a) - 4:.1f}" text-anchor="middle">{a:.2f}</text>')
        parts.append(f'<text x="{x0 + bw + 5}" y="{h - pad + 16}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{pad}" y="16">accuracy on digits (mean over seeds)</text>')
    ly = 16
    for preset in ("lie-gl2", "lie-cnn"):
        parts.append(f'<rect x="{w - 190}" y="{ly - 8}" width="10" height="8" fill="{colors[preset]}"/><text x="{w - 176}" y="{ly}">{LABELS[preset]}</text>')
        ly += 14
    parts.append("</svg>")
    write_atomic(path, "\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?")
    ap.add_argument("--collect", nargs=2)
    ap.add_argument("--preset")
    ap.add_argument("--lr")
    ap.add_argument("--seed")
    ap.add_argument("--best-lr")
    ap.add_argument("--readme")
    ap.add_argument("--svg")
    args = ap.parse_args()
    if args.collect:
        collect(args)
    elif args.best_lr:
        print(best_lr(args.results, args.best_lr))
    else:
        build(args)


if __name__ == "__main__":
    main()
