#!/usr/bin/env python3
"""The CRISP retrieval repro's table and figure, built from the committed result files.

  table.py --collect EVAL.json TRAIN.json OUT.json EXTRA_JSON   one result file from a run
  table.py RESULTS --best-lr MODEL [--grid "5e-4 1e-3"]          the tuned learning rate
  table.py RESULTS [--svg FILE] [--readme README.md]           the tables (the figure; into the README)
"""
import glob
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readme_table import replace_between_markers, write_atomic  # noqa: E402

PAPER = {
    "3x": "CRISP ~3x fewer vectors beats unpruned (abstract; BEIR NDCG@10 54.5 vs 54.3 for C8x32, 2nd-hand)",
    "11x": "CRISP 11x fewer vectors loses 3.6%",
    "posthoc": "CRISP beats post-hoc clustering at every size",
}

LABEL = {
    ("base", "none"): "the shared start: one epoch without clustering",
    ("colbert", "none"): "unpruned (second epoch without clustering)",
    ("crisp-r3", "kmeans:relative:3"): "CRISP relative:3",
    ("crisp-c4x5", "kmeans:fixed:4x5"): "CRISP fixed:4x5",
    ("colbert", "kmeans:relative:3"): "post-hoc k-means relative:3",
    ("colbert", "kmeans:fixed:4x5"): "post-hoc k-means fixed:4x5",
    ("colbert", "tail:3"): "tail pruning 1/3",
    ("colbert", "tail:11"): "tail pruning 1/11",
    ("colbert", "spacing:3"): "k-spacing 3",
    ("colbert", "spacing:11"): "k-spacing 11",
}


def collect(eval_path, train_path, out_path, extra):
    ev = json.load(open(eval_path))
    tr = json.load(open(train_path))
    row = dict(json.loads(extra))
    row.update({k: ev[k] for k in ("mrr", "recall", "k", "queries", "vectors_per_document",
                                   "vectors_per_query", "reduction")})
    row["steps"] = tr["steps"]
    row["final_loss"] = tr["final_loss"]
    row["document_tokens_mean"] = tr["document_tokens_mean"]
    write_atomic(out_path, json.dumps(row, indent=1) + "\n")


def load(results):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(results, "s*.json")))]


def best_lr(results, model):
    rows = [json.load(open(p)) for p in glob.glob(os.path.join(results, "tune", model + "-lr*.json"))]
    if not rows:
        sys.exit(f"no tuning results for {model} in {results}/tune")
    return max(rows, key=lambda r: (r["mrr"], -r["lr"]))["lr"]


def grouped(rows):
    out = {}
    for r in rows:
        out.setdefault((r["model"], r["reduction"]), []).append(r)
    return out


def mean(rs, key):
    return statistics.mean(r[key] for r in rs)


def table(results):
    rows = load(results)
    if not rows:
        sys.exit(f"no result files in {results}")
    g = grouped(rows)
    base = g.get(("colbert", "none"))
    lines = ["| row | lr | seeds | vectors / doc | reduction | MRR@10 (± s.e. over seeds) | Recall@10 | "
             "MRR Δ vs unpruned |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in LABEL.items():
        rs = g.get(key)
        if not rs:
            continue
        mrr = [r["mrr"] for r in rs]
        delta = ""
        if base:
            delta = f"{100 * (mean(rs, 'mrr') - mean(base, 'mrr')):+.2f} pts"
        reduction = mean(base, "vectors_per_document") / mean(rs, "vectors_per_document") if base else float("nan")
        spread = f" ± {statistics.stdev(mrr) / len(mrr) ** 0.5:.4f}" if len(mrr) > 1 else ""
        lines.append(f"| {label} | {rs[0]['lr']:g} | {len(rs)} | {mean(rs, 'vectors_per_document'):.1f} | "
                     f"{reduction:.1f}x | {mean(rs, 'mrr'):.4f}{spread} | {mean(rs, 'recall'):.4f} | {delta} |")
    return "\n".join(lines) + "\n\n" + claims(g)


def claims(g):
    def m(key):
        rs = g.get(key)
        return mean(rs, "mrr") if rs else None

    def seeds_all(a, b, cmp):
        ra = {r["seed"]: r["mrr"] for r in g.get(a, [])}
        rb = {r["seed"]: r["mrr"] for r in g.get(b, [])}
        common = sorted(set(ra) & set(rb))
        return common and all(cmp(ra[s], rb[s]) for s in common), len(common)

    base = m(("colbert", "none"))
    out = ["| claim | paper | ours | holds |", "|---|---|---|---|"]
    c3 = m(("crisp-r3", "kmeans:relative:3"))
    if base is not None and c3 is not None:
        out.append(f"| CRISP at ~3x fewer vectors >= unpruned - 0.5 MRR points | {PAPER['3x']} | "
                   f"{100 * c3:.2f} vs {100 * base:.2f} ({100 * (c3 - base):+.2f} pts) | "
                   f"{'yes' if c3 >= base - 0.005 else 'no'} |")
    c11 = m(("crisp-c4x5", "kmeans:fixed:4x5"))
    if base is not None and c11 is not None:
        loss = (base - c11) / base
        out.append(f"| CRISP at ~11x fewer vectors loses <= 5% relative | {PAPER['11x']} | "
                   f"loses {100 * loss:.1f}% of the unpruned MRR | {'yes' if loss <= 0.05 else 'no'} |")
    for crisp, post, label in ((("crisp-r3", "kmeans:relative:3"), ("colbert", "kmeans:relative:3"), "relative:3"),
                               (("crisp-c4x5", "kmeans:fixed:4x5"), ("colbert", "kmeans:fixed:4x5"), "fixed:4x5")):
        a, b = m(crisp), m(post)
        if a is None or b is None:
            continue
        ok, n = seeds_all(crisp, post, lambda x, y: x > y)
        seeds = f"higher on each of {n} seeds" if ok else f"not higher on every one of {n} seeds"
        out.append(f"| CRISP > post-hoc k-means at {label} | {PAPER['posthoc']} | {100 * a:.2f} vs {100 * b:.2f} "
                   f"MRR points ({seeds}) | {'yes' if ok else 'no'} |")
    return "\n".join(out) + "\n"


def svg(results, path):
    g = grouped(load(results))
    series = {
        "CRISP": [("crisp-r3", "kmeans:relative:3"), ("crisp-c4x5", "kmeans:fixed:4x5")],
        "post-hoc k-means": [("colbert", "kmeans:relative:3"), ("colbert", "kmeans:fixed:4x5")],
        "tail pruning": [("colbert", "tail:3"), ("colbert", "tail:11")],
        "k-spacing": [("colbert", "spacing:3"), ("colbert", "spacing:11")],
        "unpruned": [("colbert", "none")],
    }
    colors = {"CRISP": "#c0392b", "post-hoc k-means": "#2e86c1", "tail pruning": "#7d3c98",
              "k-spacing": "#229954", "unpruned": "#000000"}
    pts = {name: [(mean(g[k], "vectors_per_document"), mean(g[k], "mrr")) for k in keys if k in g]
           for name, keys in series.items()}
    xs = [x for p in pts.values() for x, _ in p]
    ys = [y for p in pts.values() for _, y in p]
    if not xs:
        return
    W, H, L, B, T, R = 560, 360, 60, 50, 20, 170
    x0, x1 = math.log(min(xs) * 0.8), math.log(max(xs) * 1.25)
    y0, y1 = 0.0, max(ys) * 1.1
    fx = lambda x: L + (math.log(x) - x0) / (x1 - x0) * (W - L - R)
    fy = lambda y: H - B - (y - y0) / (y1 - y0) * (H - B - T)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">vectors per document (log)</text>',
           f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})" '
           f'text-anchor="middle">MRR@10</text>']
    for v in (2, 5, 10, 20, 50):
        if math.log(v) < x0 or math.log(v) > x1:
            continue
        out.append(f'<text x="{fx(v)}" y="{H - B + 14}" text-anchor="middle">{v}</text>')
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        out.append(f'<text x="{L - 5}" y="{fy(y) + 4}" text-anchor="end">{y:.2f}</text>')
    for j, (name, p) in enumerate(pts.items()):
        c = colors[name]
        p = sorted(p)
        if len(p) > 1:
            out.append('<polyline fill="none" stroke="{}" points="{}"/>'.format(
                c, " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in p)))
        for x, y in p:
            out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="4" fill="{c}"/>')
        ly = T + 14 + 18 * j
        out.append(f'<circle cx="{W - R + 15}" cy="{ly - 4}" r="4" fill="{c}"/>')
        out.append(f'<text x="{W - R + 25}" y="{ly}">{name}</text>')
    out.append("</svg>")
    write_atomic(path, "\n".join(out) + "\n")


def main(argv):
    if argv[:1] == ["--collect"]:
        collect(*argv[1:5])
        return
    results = argv[0]
    if "--best-lr" in argv:
        lr = best_lr(results, argv[argv.index("--best-lr") + 1])
        # As the grid spells it (run names directories by it), when one is given.
        grid = argv[argv.index("--grid") + 1].split() if "--grid" in argv else []
        print(next((g for g in grid if float(g) == lr), lr))
        return
    if "--svg" in argv:
        svg(results, argv[argv.index("--svg") + 1])
    text = table(results)
    if "--readme" in argv:
        replace_between_markers(argv[argv.index("--readme") + 1], text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
