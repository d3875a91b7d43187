"""repro/adapters: small result files from the runs, and the README's tables built from them.

  table.py --collect RUN_DIR NAME METHOD CONFIG LR RESULT_FILE   one run -> RESULT_FILE
  table.py RESULTS_DIR [--readme README.md]                       the tables, printed and written
                                                                  between the README's markers

Claims on the one-seed table compare 95% intervals: "yes" when the intervals separate in the
claimed direction, "no" when they separate the other way, "within the intervals" otherwise. The
rank sweep has three seeds: its claim holds only when it holds beyond one standard deviation.
"""
import argparse
import json
import math
import os
import re
import statistics

RANK_FILE = re.compile(r"^(lora|rslora)_r(\d+)(?:\.seed(\d+))?\.json$")


def collect(run_dir, name, method, config, lr, result_file):
    f = json.load(open(run_dir + ".finetune.json"))
    source = json.load(open(run_dir + ".source.json"))["perplexity"]
    r = {"name": name, "method": method, "config": json.loads(config), "lr": float(lr), "seed": f.get("seed"),
         "trainable": f["trainable_parameters"], "base_params": f["base_parameters"],
         "target_ppl": f["validation"]["perplexity"], "target_ci": f["validation"].get("ci95"),
         "base_target_ppl": f["base_validation"]["perplexity"], "source_ppl": source,
         "seconds": f["train_seconds"], "peak_rss_mib": f.get("peak_rss_mib"), "steps": f.get("steps")}
    ranks = {}
    for k in (1, 2, 4, 8):
        path = f"{run_dir}.rank{k}.json"
        if os.path.exists(path):
            ranks[k] = json.load(open(path))["perplexity"]
    if ranks:
        r["ppl_by_eval_rank"] = ranks
    if method == "sora":
        # Ranks kept: the row counts of the saved lora_A tensors (safetensors header: 8-byte
        # little-endian length, then JSON). A slot whose gates all reached zero is saved as rank 1.
        with open(os.path.join(run_dir, "adapter_model.safetensors"), "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        kept = [v["shape"][0] for k, v in header.items() if k.endswith("lora_A.weight")]
        r["ranks_kept"] = kept
        r["ranks_initial"] = r["config"]["r"] * len(kept)
    tmp = result_file + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(r, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, result_file)


def ci_compare(a, b):
    """-1: a's interval lies below b's, 1: above, 0: they overlap."""
    if a["target_ci"][1] < b["target_ci"][0]:
        return -1
    if a["target_ci"][0] > b["target_ci"][1]:
        return 1
    return 0


def better(ref):
    def check(rows, m):
        c = ci_compare(rows[m], rows[ref])
        here = f"{rows[m]['target_ppl']:.1f} against {ref}'s {rows[ref]['target_ppl']:.1f}"
        return here, {-1: "yes", 1: "no", 0: "within the intervals"}[c]
    return check


def close(ref, tol):
    """Within `tol` (relative) of ref's perplexity, judged on m's interval."""
    def check(rows, m):
        limit = rows[ref]["target_ppl"] * (1 + tol)
        lo, hi = rows[m]["target_ci"]
        share = 100 * rows[m]["trainable"] / rows[ref]["trainable"]
        here = (f"{rows[m]['target_ppl']:.1f} against {ref}'s {rows[ref]['target_ppl']:.1f}, with {share:.1f}% of "
                f"its trainable parameters")
        return here, "yes" if hi <= limit else ("no" if lo > limit else "within the intervals")
    return check


def dylora_every_rank(rows, m):
    ranks = rows[m].get("ppl_by_eval_rank", {})
    if not ranks:
        return "–", "–"
    spread = max(ranks.values()) / min(ranks.values()) - 1
    here = "one file at ranks " + ", ".join(f"{k}: {p:.1f}" for k, p in sorted(ranks.items(), key=lambda x: int(x[0])))
    return here, "yes" if spread <= 0.10 else "no"


def sora_prunes(rows, m):
    s = rows["sora_strong"]
    kept, initial = sum(s["ranks_kept"]), s["ranks_initial"]
    here, holds = close("lora", 0.05)(rows, "sora_strong")
    return (f"λ = 5e-3 keeps {kept} of {initial} ranks; {here}",
            "no: quality is lost" if holds == "no" else (holds if kept < initial else "no ranks pruned"))


# The papers' claims: (method, paper, claim, check(rows, method) -> (here, holds)).
CLAIMS = [
    ("lora", "LoRA (Hu et al., 2021)", "close to full fine-tuning with a small fraction of the parameters",
     close("full", 0.10)),
    ("dora", "DoRA (Liu et al., 2024)", "better than LoRA at the same rank", better("lora")),
    ("pissa", "PiSSA (Meng et al., 2024)", "converges faster and ends better than LoRA at the same rank",
     better("lora")),
    ("dylora", "DyLoRA (Valipour et al., 2023)", "one run gives an adapter usable at every rank ≤ r_max "
     "(all within 10%)", dylora_every_rank),
    ("sora_strong", "SoRA (Ding et al., 2023)", "prunes ranks during training without losing quality (within 5% "
     "of LoRA)", sora_prunes),
    ("loldu", "LoLDU (Shi et al., 2024)", "close to LoRA (within 10%) with far fewer parameters",
     close("lora", 0.10)),
    ("svfit", "SVFit (Sun et al., 2024)", "better than LoRA with 16× fewer parameters", better("lora")),
    ("salt", "SALT (Elsayed et al., 2025)", "better than LoRA at a similar parameter count", better("lora")),
    ("randlora", "RandLoRA (Albert et al., 2025)", "full-rank updates beat LoRA at a smaller parameter count",
     better("lora")),
    ("lora_xs", "LoRA-XS (Bałazy et al., 2024)", "close to LoRA (within 10%) with r² parameters per layer",
     close("lora", 0.10)),
    ("lora_sb", "LoRA-SB (Ponkshe et al., 2024)", "beats LoRA-XS from the same r² parameters (its initialisation)",
     better("lora_xs")),
    ("snnk", "SNNK (Sehanobish et al., 2024)", "random-feature adapters match LoRA (within 10%) with fewer "
     "parameters", close("lora", 0.10)),
    ("loram_stru", "LoRAM (Zhang et al., 2025)", "trained on a pruned model and recovered, close to LoRA (within "
     "10%)", close("lora", 0.10)),
    ("petal", "PETALface (Narayan et al., 2025)", "quality-gated pair of LoRAs better than one LoRA",
     better("lora")),
]


def main_table(rows):
    lines = ["| method | trainable params | % of base | target ppl (95% CI) | source ppl | source drift | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base_source = rows["_base_source"]
    for name, r in rows.items():
        if name.startswith("_"):
            continue
        ci = r["target_ci"]
        source, drift = "–", "–"  # PETAL: eval has no quality scores for its gate
        if r["source_ppl"] is not None:
            source, drift = f"{r['source_ppl']:.2f}", f"{100 * (r['source_ppl'] / base_source - 1):+.1f}%"
        lines.append(f"| {name} | {r['trainable']:,} | {100 * r['trainable'] / r['base_params']:.3f} | "
                     f"{r['target_ppl']:.2f} ({ci[0]:.2f}–{ci[1]:.2f}) | {source} | {drift} | "
                     f"{r['peak_rss_mib'] or 0:.0f} |")
    first = next(r for n, r in rows.items() if not n.startswith("_"))
    lines += ["", f"Base model before adaptation: target ppl {first['base_target_ppl']:.2f}, source ppl "
              f"{base_source:.2f}."]
    for name in ("sora", "sora_strong"):
        if name in rows and "ranks_kept" in rows[name]:
            kept = rows[name]["ranks_kept"]
            lines += ["", f"{name}: {sum(kept)} of {rows[name]['ranks_initial']} ranks kept after pruning the zeroed "
                      f"gates (per slot {min(kept)}–{max(kept)})."]
    lines += ["", "| method | claim | here | holds? |", "|---|---|---|---|"]
    for m, paper, claim, check in CLAIMS:
        try:
            here, holds = check(rows, m)
        except KeyError:  # a run the claim needs is missing
            continue
        lines.append(f"| {paper} | {claim} | {here} | {holds} |")
    return lines


def rank_table(results):
    runs = {}
    for f in os.listdir(results):
        match = RANK_FILE.match(f)
        if match:
            kind, r, seed = match.group(1), int(match.group(2)), int(match.group(3) or 0)
            runs.setdefault((kind, r), {})[seed] = json.load(open(os.path.join(results, f)))["target_ppl"]
    if not runs:
        return []
    ranks = sorted({r for _, r in runs})
    seeds = sorted(set.intersection(*[set(v) for v in runs.values()]))
    stat = lambda v: f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0:.2f}"
    lines = [f"**LoRA (α/r) against rsLoRA (α/√r) across ranks**, α = 16, lr 1e-3, seeds "
             f"{', '.join(map(str, seeds))} (target ppl, mean ± sd)", "",
             "| rank | LoRA | rsLoRA | rsLoRA / LoRA |", "|---:|---:|---:|---:|"]
    for r in ranks:
        lo = [runs[("lora", r)][s] for s in seeds]
        rs = [runs[("rslora", r)][s] for s in seeds]
        lines.append(f"| {r} | {stat(lo)} | {stat(rs)} | {stat([b / a for a, b in zip(lo, rs)])} |")
    # The claim: rsLoRA keeps improving with rank where LoRA flattens. Per seed, the gain in log
    # perplexity from the smallest to the largest rank, rsLoRA's minus LoRA's.
    lo_r, hi_r = ranks[0], ranks[-1]
    gain = lambda kind, s: math.log(runs[(kind, lo_r)][s]) - math.log(runs[(kind, hi_r)][s])
    diff = [gain("rslora", s) - gain("lora", s) for s in seeds]
    mean, sd = statistics.mean(diff), statistics.stdev(diff) if len(diff) > 1 else 0.0
    holds = "yes" if mean - sd > 0 else ("fails" if mean + sd < 0 else "within spread")
    lines += ["", f"Claim (Kalajdzievski, 2023): rsLoRA keeps improving with rank where LoRA's α/r flattens. Gain "
              f"in log-perplexity from r = {lo_r} to r = {hi_r}: LoRA "
              f"{statistics.mean(gain('lora', s) for s in seeds):+.3f}, rsLoRA "
              f"{statistics.mean(gain('rslora', s) for s in seeds):+.3f}; difference {mean:+.3f} ± {sd:.3f} "
              f"per seed. Holds: **{holds}**."]
    return lines


def build(results, readme):
    rows = {}
    for f in sorted(os.listdir(results)):
        if f.endswith(".json") and f != "base.json" and not RANK_FILE.match(f) and ".seed" not in f:
            r = json.load(open(os.path.join(results, f)))
            rows[r["name"]] = r
    order = ["full", "lora", "dora", "pissa", "dylora", "sora", "sora_strong", "loldu", "svfit", "salt", "randlora",
             "lora_xs", "lora_sb", "snnk", "loram_stru", "loram_rand", "loram_semi", "petal"]
    rows = {n: rows[n] for n in order if n in rows} | {n: r for n, r in rows.items() if n not in order}
    rows["_base_source"] = json.load(open(os.path.join(results, "base.json")))["perplexity"]
    lines = main_table(rows) if len(rows) > 1 else []
    sweep = rank_table(results)
    text = "\n".join(lines + ([""] if lines and sweep else []) + sweep) + "\n"
    print(text)
    if os.path.exists(readme):
        content = open(readme).read()
        begin, end = "<!-- table:begin -->", "<!-- table:end -->"
        if begin in content and end in content:
            content = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{text}{end}", content,
                             flags=re.S)
            open(readme + ".tmp", "w").write(content)
            os.replace(readme + ".tmp", readme)


if __name__ == "__main__":
    import sys
    if len(sys.argv) > 1 and sys.argv[1] == "--collect":
        collect(*sys.argv[2:8])
    else:
        ap = argparse.ArgumentParser()
        ap.add_argument("results")
        ap.add_argument("--readme", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md"))
        a = ap.parse_args()
        build(a.results, a.readme)
