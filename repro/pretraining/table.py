"""Builds repro/pretraining's tables and figure from the committed result files.

  table.py RESULTS_DIR [--steps N] [--readme README.md] [--svg FIGURE.svg]

RESULTS_DIR holds <method>/lr<LR>_seed<S>.json (collect.py). Printed, and written between the
README's `<!-- table:begin -->` / `<!-- table:end -->` markers: the learning-rate grid at the first
seed, then per method its best learning rate of that grid rerun at every seed, with the
perplexity's mean and spread, the memory accounting, and each paper's claim checked on the per-seed
ratios. A claim "holds" only when the mean ± one standard deviation of its per-seed ratio lies
inside the claim's range, "fails" when that band lies wholly outside, and is "within spread"
otherwise.
"""
import argparse
import glob
import json
import math
import os
import re
import statistics

METHODS = ["adamw", "adamw8bit", "galore", "galore8bit", "galore_random", "fira", "frugal", "dct", "gradnormlorp",
           "sltrain", "sst", "lowrank", "lowrank_refactor", "relora", "trp", "maestro"]

# The papers' claims, as a quantity per seed and the range the claim gives it. "vs X": the
# method's perplexity over X's at the same seed (each at its best learning rate).
ratio = lambda ref: (lambda p, m: p[m] / p[ref])
CLAIMS = {
    "adamw8bit": ("matches 32-bit AdamW (Dettmers et al., 2022)", "vs adamw", ratio("adamw"), 0.97, 1.03),
    "galore": ("within a few percent of full rank (60M: 34.88 vs 34.06, +2.4%)", "vs adamw", ratio("adamw"),
               0, 1.05),
    "galore8bit": ("8-bit GaLore matches GaLore (7B: 14.65 vs 8-bit Adam 14.61)", "vs galore", ratio("galore"),
                   0.97, 1.03),
    "galore_random": ("APOLLO: a random projection is enough, near SVD GaLore", "vs galore", ratio("galore"),
                      0, 1.05),
    "fira": ("at or below full rank (60M: 31.06 vs 34.06)", "vs adamw", ratio("adamw"), 0, 1.0),
    "frugal": ("beats GaLore at equal density", "vs galore", ratio("galore"), 0, 1.0),
    "dct": ("close to GaLore without an SVD", "vs galore", ratio("galore"), 0, 1.05),
    "gradnormlorp": ("beats GaLore (its paper: GLUE fine-tuning; no pretraining number)", "vs galore",
                     ratio("galore"), 0, 1.0),
    "sltrain": ("near full rank (60M: 34.15 vs 34.06)", "vs adamw", ratio("adamw"), 0, 1.05),
    # SST: the share of the low-rank model's gap to full rank that remains.
    "sst": ("closes most of the low-rank gap to full rank", "gap left",
            lambda p, m: (p[m] - p["adamw"]) / (p["lowrank"] - p["adamw"]), -math.inf, 0.5),
    "lowrank": ("far worse than full rank (60M: 78.18 vs 34.06)", "vs adamw", ratio("adamw"), 1.3, math.inf),
    "lowrank_refactor": ("refactorisation + momentum reset improve low-rank BA", "vs lowrank", ratio("lowrank"),
                         0, 1.0),
    "relora": ("somewhat worse than full rank (60M: 37.04 vs 34.06, +8.7%)", "vs adamw", ratio("adamw"), 1.0,
               1.3),
    "trp": ("near the dense baseline at a lower rank (CIFAR-10 ResNet-20)", "vs adamw", ratio("adamw"), 0, 1.05),
    "maestro": ("near full rank at the ranks it discovers", "vs adamw", ratio("adamw"), 0, 1.05),
}


def load(results_dir, steps):
    runs = {}
    for path in glob.glob(os.path.join(results_dir, "*", "lr*_seed*.json")):
        r = json.load(open(path))
        if steps is None or r["steps"] == steps:
            runs.setdefault(r["method"], []).append(r)
    return runs


def lr_text(lr):
    return f"{lr:g}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--readme", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md"))
    ap.add_argument("--svg", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.svg"))
    args = ap.parse_args()
    runs = load(args.results, args.steps)
    methods = [m for m in METHODS if m in runs] + sorted(m for m in runs if m not in METHODS)
    if not methods:
        raise SystemExit(f"table.py: no result files in {args.results}")
    first_seed = min(r["seed"] for rs in runs.values() for r in rs)
    lrs = sorted({r["lr"] for rs in runs.values() for r in rs if r["seed"] == first_seed})

    # The grid: every method at every learning rate, first seed.
    grid, best = {}, {}
    for m in methods:
        grid[m] = {r["lr"]: r for r in runs[m] if r["seed"] == first_seed}
        if grid[m]:
            best[m] = min(grid[m].values(), key=lambda r: math.inf if r["ppl"] is None else r["ppl"])["lr"]
    lines = [f"**Learning-rate grid** (validation perplexity, seed {first_seed}; bold: each method's best; "
             "–: not run, the grid is extended only past an edge that holds a method's best)", "",
             "| method | " + " | ".join(f"lr {lr_text(lr)}" for lr in lrs) + " |",
             "|---|" + "---:|" * len(lrs)]
    for m in methods:
        cells = []
        for lr in lrs:
            r = grid[m].get(lr)
            if r is None:
                cells.append("–")
            elif r["ppl"] is None:
                cells.append("diverged")
            else:
                cells.append(f"**{r['ppl']:.2f}**" if lr == best.get(m) else f"{r['ppl']:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    edge = [m for m in best if len(lrs) > 1 and best[m] in (lrs[0], lrs[-1])]
    if edge:
        lines += ["", "Best at the edge of the grid (a wider grid might find a better rate): " + ", ".join(edge) + "."]

    # Seeds at the best learning rate.
    at_best = {m: {r["seed"]: r for r in runs[m] if m in best and r["lr"] == best[m]} for m in methods}
    seeds = sorted(set.intersection(*[set(v) for v in at_best.values() if v])) if at_best else []
    ppl = {s: {m: at_best[m][s]["ppl"] for m in methods if s in at_best[m]} for s in seeds}
    base = at_best.get("adamw", {}).get(first_seed)
    rows = []
    lines += ["", f"**Each method at its best learning rate**, seeds {', '.join(map(str, seeds))} "
              "(perplexity: mean ± standard deviation over the seeds)", "",
              "| method | lr | val ppl | opt. states + proj. (KiB) | / AdamW | total training state (KiB) | "
              "/ AdamW | paper's claim | measured (per seed, mean ± sd) | holds |",
              "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    kib = lambda b: f"{b / 1024:,.0f}"
    for m in methods:
        if m not in best:
            continue
        values = [at_best[m][s]["ppl"] for s in seeds if s in at_best[m]]
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        mem = at_best[m][min(at_best[m])]["memory"]
        state = mem["optimizer_states"] + mem["projectors"]
        base_state = base["memory"]["optimizer_states"] + base["memory"]["projectors"] if base else None
        claim_text, measured, holds = "(baseline)", "–", "–"
        row = {"method": m, "lr": best[m], "seeds": seeds, "ppl": values, "ppl_mean": mean, "ppl_sd": sd,
               "optimizer_states_and_projectors": state, "total_state": mem["total"]}
        if m in CLAIMS:
            claim_text, label, quantity, lo, hi = CLAIMS[m]
            try:
                per_seed = [quantity(ppl[s], m) for s in seeds]
            except (KeyError, ZeroDivisionError):
                per_seed = []
            if per_seed:
                q_mean = statistics.mean(per_seed)
                q_sd = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
                low, high = q_mean - q_sd, q_mean + q_sd
                holds = "yes" if lo <= low and high <= hi else ("fails" if high < lo or low > hi else
                                                               "within spread")
                measured = f"{label} {q_mean:.2f} ± {q_sd:.2f} (" + ", ".join(f"{q:.2f}" for q in per_seed) + ")"
                row.update({"claim_quantity": label, "claim_range": [lo, hi], "claim_per_seed": per_seed,
                            "holds": holds})
        rows.append(row)
        # What a method reports about itself: Maestro's discovered ranks per slot (every seed).
        ranks = [list(r["method_report"]["ranks"].values()) for r in at_best[m].values()
                 if isinstance(r.get("method_report"), dict) and "ranks" in r["method_report"]]
        note = ""
        if ranks:
            flat = [k for seed_ranks in ranks for k in seed_ranks]
            note = (f"; discovered ranks {min(flat)}–{max(flat)} (mean {statistics.mean(flat):.1f}) over "
                    f"{len(ranks[0])} slots and {len(ranks)} seeds")
            row["discovered_ranks"] = ranks
        lines.append(f"| {m} | {lr_text(best[m])} | {mean:.2f} ± {sd:.2f} | {kib(state)} | "
                     f"{state / base_state:.2f} | {kib(mem['total'])} | {mem['total'] / base['memory']['total']:.2f} | "
                     f"{claim_text}{note} | {measured} | {holds} |" if base else
                     f"| {m} | {lr_text(best[m])} | {mean:.2f} ± {sd:.2f} | {kib(state)} | – | {kib(mem['total'])} | – | "
                     f"{claim_text} | {measured} | {holds} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_readme(args.readme, text)
    write_svg(args.svg, [(m, at_best[m], best[m]) for m in methods if m in best], seeds)
    json.dump(rows, open(os.path.join(args.results, "summary.json"), "w"), indent=1)


def write_readme(path, text):
    if not os.path.exists(path):
        return
    readme = open(path).read()
    begin, end = "<!-- table:begin -->", "<!-- table:end -->"
    if begin not in readme or end not in readme:
        return
    new = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{text}{end}", readme, flags=re.S)
    tmp = path + ".tmp"
    open(tmp, "w").write(new)
    os.replace(tmp, path)


def write_svg(path, rows, seeds):
    """A dot plot: one row per method, each seed's perplexity at its best lr, the mean as a bar."""
    if not rows:
        return
    values = [r["ppl"] for _, by_seed, _ in rows for r in by_seed.values()]
    lo, hi = math.log(min(values) * 0.95), math.log(max(values) * 1.05)
    left, width, row_h, top = 150, 520, 22, 30
    x = lambda v: left + (math.log(v) - lo) / (hi - lo) * width
    height = top + row_h * len(rows) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           f'<text x="{left}" y="16">validation perplexity (log scale), each seed at the method\'s best lr</text>']
    ticks = [t for t in (20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000) if lo <= math.log(t) <= hi]
    for t in ticks:
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{height - 30}" stroke="#ddd"/>')
        out.append(f'<text x="{x(t):.1f}" y="{height - 14}" text-anchor="middle">{t}</text>')
    adamw = next((by_seed for m, by_seed, _ in rows if m == "adamw"), None)
    if adamw:
        a = statistics.mean(r["ppl"] for r in adamw.values())
        out.append(f'<line x1="{x(a):.1f}" y1="{top - 4}" x2="{x(a):.1f}" y2="{height - 30}" stroke="#c33" '
                   'stroke-dasharray="4 3"/>')
    for i, (m, by_seed, lr) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{m}</text>')
        ps = [r["ppl"] for r in by_seed.values()]
        mean = statistics.mean(ps)
        out.append(f'<line x1="{x(mean):.1f}" y1="{y - 7:.1f}" x2="{x(mean):.1f}" y2="{y + 7:.1f}" stroke="#333" '
                   'stroke-width="2"/>')
        for p in ps:
            out.append(f'<circle cx="{x(p):.1f}" cy="{y:.1f}" r="3.5" fill="#36c" fill-opacity="0.6"/>')
    out.append("</svg>")
    tmp = path + ".tmp"
    open(tmp, "w").write("\n".join(out) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
