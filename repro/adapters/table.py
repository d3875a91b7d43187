"""Collects repro/adapters/run's JSON files into OUT/results.md and OUT/results.json."""
import json
import os
import sys

out, methods = sys.argv[1], sys.argv[2:]
base_source = json.load(open(os.path.join(out, "base.source.json")))["perplexity"]
rows = []
for m in methods:
    path = os.path.join(out, m + ".finetune.json")
    if not os.path.exists(path):
        continue
    f = json.load(open(path))
    source = json.load(open(os.path.join(out, m + ".source.json")))["perplexity"]
    rows.append({"method": m, "trainable": f["trainable_parameters"], "base_params": f["base_parameters"],
                 "target_ppl": f["validation"]["perplexity"], "target_ci": f["validation"].get("ci95"),
                 "base_target_ppl": f["base_validation"]["perplexity"], "source_ppl": source,
                 "source_drift": source / base_source - 1, "seconds": f["train_seconds"],
                 "peak_rss_mib": f.get("peak_rss_mib")})
lines = ["| method | trainable params | % of base | target ppl (95% CI) | source ppl | source drift | train s | peak RSS MiB |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    ci = r["target_ci"]
    ci_text = f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else ""
    lines.append(f"| {r['method']} | {r['trainable']:,} | {100 * r['trainable'] / r['base_params']:.3f} | "
                 f"{r['target_ppl']:.2f}{ci_text} | {r['source_ppl']:.2f} | {100 * r['source_drift']:+.1f}% | "
                 f"{r['seconds']:.0f} | {r['peak_rss_mib'] or 0:.0f} |")
dylora = [(k, json.load(open(os.path.join(out, f"dylora.rank{k}.json")))["perplexity"])
          for k in (1, 2, 4, 8) if os.path.exists(os.path.join(out, f"dylora.rank{k}.json"))]
if dylora:
    lines += ["", "DyLoRA (r_max = 8), one file evaluated at each rank (target ppl): " +
              ", ".join(f"r = {k}: {p:.2f}" for k, p in dylora)]
    for r in rows:
        if r["method"] == "dylora":
            r["ppl_by_rank"] = dict(dylora)
for name in ("sora", "sora_strong"):
    sora_file = os.path.join(out, name, "adapter_model.safetensors")
    if name not in methods or not os.path.exists(sora_file):
        continue
    # The ranks kept are the row counts of the saved lora_A tensors (safetensors header: 8-byte
    # little-endian length, then JSON). A slot whose gates all reached zero is saved as rank 1.
    with open(sora_file, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    ranks = [v["shape"][0] for k, v in header.items() if k.endswith("lora_A.weight")]
    initial = 8  # the r the run script gives every adapter
    kept = sum(ranks)
    lines += ["", f"{name}: {kept} of {initial * len(ranks)} ranks kept after pruning the zeroed gates "
                  f"(per slot {min(ranks)}–{max(ranks)}, mean {kept / len(ranks):.2f})."]
    for r in rows:
        if r["method"] == name:
            r["ranks_kept"] = kept
            r["ranks_initial"] = initial * len(ranks)
if rows:
    lines.append("")
    lines.append(f"Base model before adaptation: target ppl {rows[0]['base_target_ppl']:.2f}, source ppl {base_source:.2f}.")
text = "\n".join(lines) + "\n"
open(os.path.join(out, "results.md"), "w").write(text)
json.dump(rows, open(os.path.join(out, "results.json"), "w"), indent=2)
print(text)
