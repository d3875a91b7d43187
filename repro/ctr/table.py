"""CTR compression repro table: AFM (Yu et al., KDD'24) against the uncompressed model and weight SVD
at the same size, each claim beside our number, from the committed result files in repro/ctr/results
(written by repro/ctr/run).

  python3 repro/ctr/table.py RESULTS [--readme README.md] [--svg results.svg]
  python3 repro/ctr/table.py --collect EVAL.json RESULT.json [--report COMPRESS.json]
"""
import argparse
import glob
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readme_table import replace_between_markers, write_atomic  # noqa: E402

VARIANTS = ["original", "afm-3x", "svd-3x", "afm-5x", "svd-5x"]
COLOURS = {"original": "#333333", "afm-3x": "#d62728", "svd-3x": "#1f77b4", "afm-5x": "#ff9896",
           "svd-5x": "#aec7e8"}
TIE = 1e-4  # AUC differences below this are read as no ordering
PAPER = ("abstract: \"with 3–5x model size reduction, our compressed models can achieve both faster inference "
         "and higher AUC than the uncompressed original models\" (Criteo, Avazu, an industrial set)")


def yes(b):
    return "holds" if b else "does not hold"


def collect(src, dst, report, speed):
    """The fields the table reads, from a `lowrank --json ctr eval` (or `ctr generate`) output; with
    `speed`, several eval outputs of the same model whose median rows/s is kept."""
    with open(src) as fh:
        j = json.load(fh)
    keep = ["auc", "logloss", "rows", "ctr", "parameters", "batch_size", "rows_per_s", "seconds", "train_rows",
            "test_rows", "train_ctr", "test_ctr", "teacher_test_auc", "sparse_fields", "dense_fields"]
    out = {k: j[k] for k in keep if k in j}
    if speed:
        rates = []
        for path in speed:
            with open(path) as fh:
                rates.append(json.load(fh)["rows_per_s"])
        out["rows_per_s_passes"] = rates
        out["rows_per_s"] = sorted(rates)[len(rates) // 2]
    if report:
        with open(report) as fh:
            r = json.load(fh)
        out["compression"] = {k: r[k] for k in ("method", "ratio", "factor", "model_params_before",
                                                "model_params_after", "calibration_rows") if k in r}
    write_atomic(dst, json.dumps(out, indent=1) + "\n")


def mean(xs):
    return sum(xs) / len(xs)


def sd(xs):
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def load(results):
    """{model: {variant: {seed: result}}}."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(results, "*-s*-*.json"))):
        name = os.path.basename(path)[:-5]
        model, rest = name.split("-s", 1)
        seed, variant = rest.split("-", 1)
        with open(path) as fh:
            runs.setdefault(model, {}).setdefault(variant, {})[int(seed)] = json.load(fh)
    return runs


def lines(results):
    runs = load(results)
    data = {}
    if os.path.exists(os.path.join(results, "data.json")):
        with open(os.path.join(results, "data.json")) as fh:
            data = json.load(fh)
    out = []
    if data:
        out += [f"Data: {data.get('train_rows')} training and {data.get('test_rows')} test rows, "
                f"{data.get('sparse_fields')} categorical and {data.get('dense_fields')} numeric fields, CTR "
                f"{data.get('test_ctr', 0):.4f}; the teacher's own test AUC (the ceiling) "
                f"{data.get('teacher_test_auc', 0):.4f}.", ""]
    out += ["Mean ± sample sd over seeds; rows/s of `lowrank ctr eval` at batch 512 on 2 threads (the median of "
            "three passes over the test rows); "
            "size = the whole model's parameters (the uncompressed linear part included).", "",
            "| model | variant | seeds | parameters | size | AUC | log loss | rows/s (batch 512) | speed-up |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    claims = ["| claim | paper | ours | |", "|---|---|---|---|"]
    for model in sorted(runs):
        v = runs[model]
        if "original" not in v:
            continue
        base = v["original"]
        base_speed = mean([r["rows_per_s"] for r in base.values()])
        for name in VARIANTS:
            if name not in v:
                continue
            rs = list(v[name].values())
            aucs = [r["auc"] for r in rs]
            params = mean([r["parameters"] for r in rs])
            size = mean([base[s]["parameters"] / r["parameters"] for s, r in v[name].items() if s in base])
            speed = mean([r["rows_per_s"] for r in rs])
            out.append(f"| {model} | {name} | {len(rs)} | {params:,.0f} | {size:.2f}× smaller | {mean(aucs):.5f} ± "
                       f"{sd(aucs):.5f} | {mean([r['logloss'] for r in rs]):.5f} | {speed:,.0f} | "
                       f"{speed / base_speed:.2f}× |")
        for f in ("3x", "5x"):
            afm, svd = v.get(f"afm-{f}", {}), v.get(f"svd-{f}", {})
            seeds = sorted(set(afm) & set(base))
            if seeds:
                d = [afm[s]["auc"] - base[s]["auc"] for s in seeds]
                claims.append(f"| {model} AFM {f}: AUC ≥ original − 0.001 (mean over {len(seeds)} seeds) | higher than "
                              f"the original | {mean(d):+.5f} | {yes(mean(d) >= -0.001)} |")
            seeds = sorted(set(afm) & set(svd))
            if seeds:
                wins = sum(afm[s]["auc"] > svd[s]["auc"] for s in seeds)
                diffs = [afm[s]["auc"] - svd[s]["auc"] for s in seeds]
                d = mean(diffs)
                # A mean difference below TIE (or below its own seed-to-seed spread) is no ordering.
                if abs(d) < TIE or (len(diffs) > 1 and abs(d) < sd(diffs) / math.sqrt(len(diffs))):
                    verdict = "no clear difference"
                else:
                    verdict = yes(d > 0 and wins == len(seeds))
                claims.append(f"| {model} AFM above weight SVD at equal size ({f}): ahead in every seed, by more than "
                              f"{TIE} AUC and its standard error | AFM ahead | {wins}/{len(seeds)} seeds, mean "
                              f"{d:+.5f} | {verdict} |")
        if "afm-3x" in v:
            seeds = sorted(set(v["afm-3x"]) & set(base))
            ratio = mean([v["afm-3x"][s]["rows_per_s"] / base[s]["rows_per_s"] for s in seeds])
            claims.append(f"| {model} AFM 3×: batch-512 inference ≥ 1.5× faster | faster | {ratio:.2f}× | "
                          f"{yes(ratio >= 1.5)} |")
    return out + ["", "Paper: " + PAPER + ".", ""] + claims


def write_svg(path, results):
    """AUC per variant and model: one dot per seed, a bar at the mean."""
    runs = load(results)
    models = [m for m in sorted(runs) if "original" in runs[m]]
    if not models:
        return
    W, H, L, T, B = 720, 340, 70, 30, 70
    panel = (W - L - 20) / len(models)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">Test AUC after compression '
           f'(dots: seeds; bars: mean)</text>']
    aucs = [r["auc"] for m in models for v in runs[m].values() for r in v.values()]
    lo, hi = min(aucs), max(aucs)
    pad = max((hi - lo) * 0.15, 1e-4)
    lo, hi = lo - pad, hi + pad
    py = lambda a: T + (1 - (a - lo) / (hi - lo)) * (H - T - B)
    out.append(f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>')
    for i in range(5):
        a = lo + (hi - lo) * i / 4
        out.append(f'<text x="{L - 4}" y="{py(a) + 4:.1f}" text-anchor="end">{a:.4f}</text>')
        out.append(f'<line x1="{L}" y1="{py(a):.1f}" x2="{W - 20}" y2="{py(a):.1f}" stroke="#eee"/>')
    for mi, m in enumerate(models):
        x0 = L + mi * panel
        names = [n for n in VARIANTS if n in runs[m]]
        step = panel / (len(names) + 1)
        out.append(f'<text x="{x0 + panel / 2:.1f}" y="{H - 12}" text-anchor="middle" font-size="12">{m}</text>')
        for j, n in enumerate(names):
            x = x0 + step * (j + 1)
            vals = [r["auc"] for r in runs[m][n].values()]
            out.append(f'<line x1="{x - 12:.1f}" y1="{py(mean(vals)):.1f}" x2="{x + 12:.1f}" y2="{py(mean(vals)):.1f}" '
                       f'stroke="{COLOURS[n]}" stroke-width="3"/>')
            for k, a in enumerate(vals):
                out.append(f'<circle cx="{x - 6 + 6 * (k % 3):.1f}" cy="{py(a):.1f}" r="2.5" fill="{COLOURS[n]}"/>')
            out.append(f'<text x="{x:.1f}" y="{H - B + 14}" text-anchor="middle" '
                       f'transform="rotate(30 {x:.1f} {H - B + 14})">{n}</text>')
    out.append("</svg>")
    write_atomic(path, "\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?")
    ap.add_argument("--collect", nargs=2, metavar=("SRC", "DST"))
    ap.add_argument("--report")
    ap.add_argument("--speed", nargs="+")
    ap.add_argument("--readme")
    ap.add_argument("--svg")
    a = ap.parse_args()
    if a.collect:
        collect(a.collect[0], a.collect[1], a.report, a.speed)
        return
    text = "\n".join(lines(a.results))
    print(text)
    if a.readme:
        replace_between_markers(a.readme, text)
    if a.svg:
        write_svg(a.svg, a.results)


if __name__ == "__main__":
    main()
