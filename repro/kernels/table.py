"""repro/kernels: results.md built from the committed result files of `lowrank repro kernels`.

  table.py RESULTS_DIR [--out results.md]     print the page and write it (atomically)

Each RESULTS_DIR/<name>.json is what one row wrote: its paper, setup, claims (each with the paper's
claim, a verdict computed by the row from its numbers, and the reason) and tables of numbers. The page
lists the rows in the order of ORDER (rows not listed there follow, alphabetically), a summary of the
verdicts first, then each row's claims and tables; nothing is typed in by hand. A file written with
--quick is marked as such.
"""
import argparse
import glob
import json
import os

# The table order; a new row needs no entry here (it is appended).
ORDER = ["ntk", "rf_ridge", "kde", "dp_similarity", "dpp_sampling", "snnk", "dkm", "gkcl", "hierarchical_poly",
         "cnn_kernel", "singular_likelihood", "mcr2", "rkme", "molrg", "quantum_kernel", "loki", "gcr", "funbat"]


def load(results):
    rows = {}
    for path in glob.glob(os.path.join(results, "*.json")):
        with open(path) as fh:
            row = json.load(fh)
        rows[row["name"]] = row
    known = [n for n in ORDER if n in rows]
    return [rows[n] for n in known + sorted(set(rows) - set(known))]


def cell(value):
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def verdict(claim):
    return "holds" if claim["holds"] else "**does not hold**"


def page(rows):
    lines = ["# Kernel methods: reproductions", "",
             "Built by `repro/kernels/table.py` from `repro/kernels/results/*.json` (written by "
             "`repro/kernels/run`, i.e. `lowrank repro kernels all`); do not edit by hand.", "",
             "| row | claim checked here | paper | verdict |", "|---|---|---|---|"]
    for row in rows:
        for c in row["claims"]:
            lines.append(f"| {row['name']} | {cell(c['claim'])} | {cell(c['paper'])} | {verdict(c)} |")
    for row in rows:
        quick = " (--quick sizes)" if row.get("quick") else ""
        lines += ["", f"## {row['name']}{quick}", "", f"{row['title']}. Paper: {row['paper_claim']}.", "",
                  f"Setup: {row['setup']}; {row['seconds']:.0f} s.", "",
                  "| claim | verdict | measured |", "|---|---|---|"]
        for c in row["claims"]:
            lines.append(f"| {cell(c['claim'])} | {verdict(c)} | {cell(c['reason'])} |")
        for t in row["tables"]:
            lines += ["", f"### {t['title']}", "", "| " + " | ".join(cell(c) for c in t["columns"]) + " |",
                      "|" + "---:|" * len(t["columns"])]
            for r in t["rows"]:
                lines.append("| " + " | ".join(cell(v) for v in r) + " |")
        if row.get("svg"):
            lines += ["", f"![{row['name']}](results/{row['svg']})"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--out")
    args = ap.parse_args()
    text = page(load(args.results))
    print(text, end="")
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
