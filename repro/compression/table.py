"""Tabulates repro/compression/run's JSON files into results.md and results.json, beside the claims
of the papers (cited in the header of each method's source file) and whether this run reproduces them."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])


def load(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


dense = load("dense")
dense_ppl = dense["perplexity"] if dense else None
rows, data = [], {"dense_perplexity": dense_ppl, "runs": {}}


def row(name, label):
    r = load(name)
    if r is None:
        rows.append(f"| {label} | – | – | – | – | – | (not run) |")
        return None
    rep = r["report"]
    ppl = r["perplexity_after"]
    data["runs"][name] = {"perplexity": ppl, "param_reduction": rep["param_reduction"],
                          "bytes_ratio": rep["bytes_ratio"], "seconds": rep["seconds"]}
    errs = [s["output_error"] for s in rep["slots"] if s["output_error"] is not None]
    mean_err = sum(errs) / len(errs) if errs else float("nan")
    rise = f"{100 * (ppl / dense_ppl - 1):+.2f}%" if dense_ppl else "–"
    rows.append(f"| {label} | {100 * rep['param_reduction']:.1f}% | {rep['bytes_ratio']:.3f} | "
                f"{mean_err:.4f} | {ppl:.2f} | {rise} | {rep['seconds']:.1f} |")
    return ppl


def verdict(ok):
    return "holds" if ok else "does not hold"


lines = ["# Compression of the tiny preset (GCIDE), validation perplexity", "",
         f"Dense model: perplexity {dense_ppl:.2f}." if dense_ppl else "", "",
         "| run | param. reduction | 16-bit bytes ratio | mean output error | perplexity | vs dense | seconds |",
         "|---|---:|---:|---:|---:|---:|---:|"]
ppl = {}
for ratio in ("0.2", "0.4", "0.6"):
    for m in ("svd", "fwsvd", "asvd", "svd_llm", "welore"):
        ppl[(m, ratio)] = row(f"{m}-{ratio}", f"{m} @ {int(float(ratio) * 100)}%")
for name in ("svdquant-r8", "svdquant-r32", "prune24", "prune24+svd-r16", "prune24+eora-r16",
             "rtn", "rtn+svd-r16", "rtn+eora-r16"):
    ppl[name] = row(name, name)
lines += rows
lines += ["", "## The papers' claims", "", "| claim | source | here |", "|---|---|---|"]


def rise(p):
    return f"{100 * (p / dense_ppl - 1):+.2f}%" if p is not None and dense_ppl else "–"


def claim(text, source, ok, a=None, b=None, far=False):
    """ok: the ordering; a, b: the two perplexities compared; far: the claim is about a large gap."""
    if ok is None:
        lines.append(f"| {text} | {source} | – |")
        return
    detail = f" ({rise(a)} vs {rise(b)} over dense)" if a is not None and b is not None else ""
    text_here = ("ordering holds" if ok else "does not hold") + detail
    if far and ok:
        gap = (b - a) / dense_ppl if dense_ppl else 0
        text_here += "; the gap is large" if gap > 0.5 else "; the gap is small here, so 'far ahead' is not reproduced"
    lines.append(f"| {text} | {source} | {text_here} |")


def lt(a, b):
    return None if a is None or b is None else a < b


for ratio in ("0.2", "0.4"):
    pct = int(float(ratio) * 100)
    claim(f"SVD-LLM far ahead of plain SVD at {pct}%", "SVD-LLM Table 1 (LLaMA-7B: 7.94 vs 20061 at 20%)",
          lt(ppl[("svd_llm", ratio)], ppl[("svd", ratio)]), ppl[("svd_llm", ratio)], ppl[("svd", ratio)], far=True)
    claim(f"SVD-LLM ahead of ASVD and FWSVD at {pct}%", "SVD-LLM Table 1",
          None if None in (ppl[("svd_llm", ratio)], ppl[("asvd", ratio)], ppl[("fwsvd", ratio)])
          else ppl[("svd_llm", ratio)] < min(ppl[("asvd", ratio)], ppl[("fwsvd", ratio)]))
claim("SVDQuant (rank 32) beats W4 round-to-nearest alone", "SVDQuant paper, FLUX tables",
      lt(ppl["svdquant-r32"], ppl["rtn"]), ppl["svdquant-r32"], ppl["rtn"])
claim("EoRA beats plain-SVD compensation on a 2:4-pruned base", "EoRA paper (LLaMA3-8B 2:4)",
      lt(ppl["prune24+eora-r16"], ppl["prune24+svd-r16"]), ppl["prune24+eora-r16"], ppl["prune24+svd-r16"])
claim("EoRA beats plain-SVD compensation on an INT4 base", "EoRA paper (3/4-bit GPTQ bases)",
      lt(ppl["rtn+eora-r16"], ppl["rtn+svd-r16"]), ppl["rtn+eora-r16"], ppl["rtn+svd-r16"])
lines += ["", "Perplexity is exp of the mean token NLL on up to 32,768 validation tokens (lowrank eval's "
          "strided windows). Output error: sqrt(tr(ΔW H ΔWᵀ)/tr(W H Wᵀ)) over the calibration Gram, "
          "averaged over slots."]
(out / "results.md").write_text("\n".join(lines) + "\n")
(out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
print("\n".join(lines))
