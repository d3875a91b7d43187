"""repro/mixers: the README's tables and figure, built from the committed result files.

  table.py RESULTS_DIR [--readme README.md] [--svg results.svg]

Each claim is printed beside our number with "holds here: yes/no". A result file that is missing
prints as "not run". Files (written by repro/mixers/run):
  approximation_synthetic.json, approximation_pretrained.json   repro_mixers_approximation
"""
import argparse
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
APPROX_MIXERS = ("local", "performer", "scatterbrain")


def load(results, name):
    path = os.path.join(results, name)
    return json.load(open(path)) if os.path.exists(path) else None


def yes(b):
    return "yes" if b else "no"


def approximation_groups(result, key):
    """{(key value, budget): {mixer: (error, std)}} of one approximation result."""
    groups = {}
    for r in result["rows"]:
        groups.setdefault((r[key], r["budget"]), {})[r["mixer"]] = (r["error"], r["error_std"])
    return groups


def approximation_lines(result, key, title):
    lines = [f"### {title}", ""]
    if result is None:
        return lines + ["not run", ""]
    groups = approximation_groups(result, key)
    lines += [f"| {key} | budget (w + m) | local | performer | scatterbrain | best baseline / scatterbrain | "
              "scatterbrain ≤ both |",
              "|---|---|---|---|---|---|---|"]
    holds_everywhere, best_ratio, winners = True, 0.0, []
    for (k, budget), errs in sorted(groups.items()):
        if not all(m in errs for m in APPROX_MIXERS):
            continue
        loc, perf, sb = (errs[m][0] for m in APPROX_MIXERS)
        base = min(loc, perf)
        ratio = base / sb if sb > 0 else math.inf
        holds = sb <= base
        holds_everywhere &= holds
        best_ratio = max(best_ratio, ratio)
        winners.append((k, budget, "local" if loc < perf else "performer"))
        cell = lambda m: f"{errs[m][0]:.4f} ± {errs[m][1]:.4f}"
        lines.append(f"| {k} | {budget} | {cell('local')} | {cell('performer')} | {cell('scatterbrain')} | "
                     f"{ratio:.2f}× | {yes(holds)} |")
    lines += ["", "| claim | paper | here | holds here |", "|---|---|---|---|",
              f"| scatterbrain's error ≤ min(local, performer) at equal memory, every row | yes | "
              f"{'every row' if holds_everywhere else 'not every row'} | {yes(holds_everywhere)} |",
              f"| best baseline / scatterbrain ≥ 1.5 somewhere | 2.1× | {best_ratio:.2f}× | {yes(best_ratio >= 1.5)} |"]
    if key == "temperature" and winners:
        low = [w for w in winners if w[0] == min(x[0] for x in winners)]
        high = [w for w in winners if w[0] == max(x[0] for x in winners)]
        ok = all(w[2] == "local" for w in low) and all(w[2] == "performer" for w in high)
        lines.append(f"| local wins at the lowest temperature, performer at the highest | expected | "
                     f"{', '.join(w[2] for w in low)} / {', '.join(w[2] for w in high)} | {yes(ok)} |")
    return lines + [""]


def write_svg(path, result):
    """Error against softmax temperature (log-log), one line per mixer and budget."""
    if result is None:
        return
    groups = approximation_groups(result, "temperature")
    temps = sorted({k for k, _ in groups})
    budgets = sorted({b for _, b in groups})
    series = []
    for b in budgets:
        for m in APPROX_MIXERS:
            pts = [(t, groups[(t, b)][m][0]) for t in temps if m in groups.get((t, b), {})]
            if pts:
                series.append((f"{m}, budget {b}", m, b, pts))
    if not series:
        return
    W, H, L, R, T, B = 640, 360, 60, 190, 20, 40
    xs = [math.log(t) for t in temps]
    ys = [math.log(e) for s in series for _, e in s[3] if e > 0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    px = lambda t: L + (math.log(t) - x0) / (x1 - x0) * (W - L - R)
    py = lambda e: T + (1 - (math.log(e) - y0) / (y1 - y0)) * (H - T - B)
    colours = {"local": "#1b9e77", "performer": "#d95f02", "scatterbrain": "#7570b3"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">softmax temperature (log)</text>',
           f'<text x="14" y="{(T + H - B) / 2}" transform="rotate(-90 14 {(T + H - B) / 2})" '
           f'text-anchor="middle">relative error (log)</text>']
    for t in temps:
        out.append(f'<text x="{px(t):.1f}" y="{H - B + 14}" text-anchor="middle">{t:g}</text>')
    for k in range(5):
        e = math.exp(y0 + (y1 - y0) * k / 4)
        out.append(f'<text x="{L - 4}" y="{py(e) + 4:.1f}" text-anchor="end">{e:.3g}</text>')
    for i, (label, m, b, pts) in enumerate(series):
        dash = "" if b == budgets[-1] else ' stroke-dasharray="4 3"'
        d = " ".join(f"{px(t):.1f},{py(e):.1f}" for t, e in pts if e > 0)
        out.append(f'<polyline points="{d}" fill="none" stroke="{colours[m]}" stroke-width="2"{dash}/>')
        y = T + 14 * i
        out.append(f'<line x1="{W - R + 10}" y1="{y}" x2="{W - R + 30}" y2="{y}" stroke="{colours[m]}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{W - R + 34}" y="{y + 4}">{label}</text>')
    out.append("</svg>")
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(out) + "\n")
    os.replace(tmp, path)


def replace_between_markers(readme, text):
    begin, end = "<!-- table:begin -->", "<!-- table:end -->"
    body = open(readme).read()
    i, j = body.find(begin), body.find(end)
    if i < 0 or j < i:
        raise SystemExit(f"{readme}: no {begin} … {end} markers")
    new = body[: i + len(begin)] + "\n" + text + "\n" + body[j:]
    tmp = readme + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(new)
    os.replace(tmp, readme)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?", default=os.path.join(HERE, "results"))
    ap.add_argument("--readme")
    ap.add_argument("--svg")
    a = ap.parse_args()
    lines = []
    lines += approximation_lines(load(a.results, "approximation_synthetic.json"), "temperature",
                                 "Scatterbrain: approximation error over a softmax-temperature sweep (synthetic)")
    lines += approximation_lines(load(a.results, "approximation_pretrained.json"), "layer",
                                 "Scatterbrain: approximation error on the pretrained model's own attention inputs")
    text = "\n".join(lines)
    print(text)
    if a.readme:
        replace_between_markers(a.readme, text)
    if a.svg:
        write_svg(a.svg, load(a.results, "approximation_synthetic.json"))


if __name__ == "__main__":
    main()
