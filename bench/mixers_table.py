#!/usr/bin/env python3
"""Writes the tables of docs/benchmarks.md from the committed results, each between its page
markers `<!-- NAME table: begin -->` and `<!-- NAME table: end -->`:
  mixers         bench/results/mixers.json (`bench_mixers --json`): token mixers against exact
                 attention, with the issue's targets at the longest length checked
  listops-train  bench/results/mixers-listops-train.json (`bench_mixers --backward --json`): one
                 mixer layer's training step at the ListOps shape of repro/mixers PART=ssm
  s4-kernel      bench/results/s4_kernel.json (`bench_s4_kernel`, Google Benchmark's JSON): S4D's
                 Vandermonde kernel against S4's Cauchy kernel
  selective-scan bench/results/selective_scan.json (`bench_selective_scan`): the scan kernel against
                 the per-step libtorch loop
  mixer-layers   bench/results/mixer-layers.json (`bench_mixer_layers --json`): one-layer trunks
                 (mixer + MLP), the papers' whole-model speed comparison
  convnet        bench/results/convnet.json (`bench_convnet`) and bench/peers/results/convnet.json
                 (bench/peers/convnet.py): the MetaNeXt nets, UniRepLKNet's deploy form, and timm
  neighborhood   bench/results/neighborhood.json (`bench_neighborhood`): tiled against naive NA
  mamba-decode   bench/results/mamba_decode.json (`bench_mamba_decode`): tok/s by context
  fft-conv       bench/results/fft_conv.json (`bench_fft_conv`): FFT against direct convolution,
                 Monarch against at::fft"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "repro"))
from readme_table import write_named_tables  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The attention replacements the targets are about (Mixers I); the state-space and convolution
# mixers are listed too, for comparison.
ATTENTION_SIDE = ("fnet", "linformer", "local", "neighborhood", "performer", "ponet", "scatterbrain", "soft")


def fmt(x, digits):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def listops_train_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/mixers-listops-train.json")))
    options = ", ".join(f"{k}: {json.dumps(v)}" for k, v in r["options"].items())
    lines = [f"Batch {r['batch']}, hidden {r['heads'] * r['head_dim']} ({r['heads']} heads × {r['head_dim']}), "
             f"float32, {r['threads']} threads, median of {r['repeats']} forward + backward passes of one layer "
             f"(gradients into the input and every tensor of the mixer). Options: {options}.", "",
             "| n | mixer | ms | SDPA / this |", "|---|---|---|---|"]
    for x in r["rows"]:
        if "skipped" not in x:
            lines.append(f"| {x['n']} | {x['mixer']} | {fmt(x['ms'], 1)} | {fmt(x.get('sdpa_over_this'), 2)} |")
    return lines


def s4_kernel_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/s4_kernel.json")))
    runs = {}
    for b in r["benchmarks"]:
        method, length = b["name"].split("/")[:2]
        runs.setdefault(int(length), {})[method] = b
    lines = ["| L | Vandermonde (S4D) | Cauchy (S4, DPLR) | Cauchy / Vandermonde | ‖K_cauchy − K_vand‖∞ / ‖K‖∞ |",
             "|---|---|---|---|---|"]
    for length in sorted(runs):
        v, c = runs[length].get("vandermonde"), runs[length].get("cauchy")
        if v and c:
            lines.append(f"| {length} | {v['real_time']:.1f} ms | {c['real_time']:.1f} ms | "
                         f"**{c['real_time'] / v['real_time']:.1f}×** | {c.get('rel_err', math.nan):.1e} |")
    return lines


def selective_scan_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/selective_scan.json")))
    lines = [f"D = {r['channels']} channels, N = {r['state']}, batch {r['batch']}, {r['dtype']}, {r['threads']} "
             f"threads, medians of {r['repeats']}; the machine's read bandwidth in the same run: "
             f"{r['read_bandwidth_gb_per_s']:.1f} GB/s.", "",
             "| L | kernel | per-step loop | loop / kernel | kernel fwd+bwd | loop fwd+bwd | loop / kernel | GB/s "
             "| Gexp/s | AVX2 step vs portable | AVX-512 step vs portable | max \\|diff\\| |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def speedup(x, key):
        return f"{x['portable_step_ms'] / x[key]:.1f}×" if x.get(key) else "—"

    for x in r["rows"]:
        lines.append(f"| {x['L']} | {x['kernel_forward_ms']:.2f} ms | {x['loop_forward_ms']:.1f} ms | "
                     f"**{x['loop_over_kernel_forward']:.1f}×** | {x['kernel_forward_backward_ms']:.1f} ms | "
                     f"{x['loop_forward_backward_ms']:.0f} ms | **{x['loop_over_kernel_forward_backward']:.0f}×** | "
                     f"{x['kernel_gb_per_s']:.2f} | {x['kernel_gexp_per_s']:.2f} | "
                     f"{speedup(x, 'avx2_step_ms')} | {speedup(x, 'avx512_step_ms')} | {x['max_abs_diff']:.1e} |")
    kernel = "AVX-512" if r.get("avx512") else "AVX2" if r.get("avx2") else "portable"
    lines += ["", f"The kernel's forward steps ran in {kernel} in this run."]
    return lines


def mixers_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/mixers.json")))
    options = ", ".join(f"{k}: {json.dumps(v)}" for k, v in r["options"].items())
    lines = [
        f"Batch {r['batch']}, {r['heads']} heads × {r['head_dim']}, float32, "
        f"{'causal' if r['causal'] else 'bidirectional'}, {r['threads']} threads, median of {r['repeats']} "
        f"forward passes; peak memory is the rise of VmHWM over one forward in a fresh process. Options: "
        f"{options}; every other mixer at its defaults. Roofs of the same run: GEMM "
        f"{r['gemm_gflop_per_s']:.0f} GFLOP/s, triad {r['triad_gb_per_s']:.1f} GB/s.",
        "",
        "GFLOP/s and GB/s are on each row's counted FLOPs and bytes (the projections, plus the exact "
        "baselines' scores and the attention-side mixers' own windows, feature maps, projections or FFTs); "
        "`+` marks a mixer whose own arithmetic is not counted (a lower bound). The bound is the roof the "
        "counted work would hit first; \"roof\" is the fraction of that roof's time the row reaches.",
        "",
        "| n | mixer | ms | SDPA / this | materialised / this | peak MiB | memory / materialised's | GFLOP/s "
        "| GB/s | bound | roof |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [x for x in r["rows"] if "skipped" not in x]
    for x in rows:
        lines.append(
            f"| {x['n']} | {x['mixer']} | {fmt(x['ms'], 1)} | {fmt(x.get('sdpa_over_this'), 2)} | "
            f"{fmt(x.get('materialised_over_this'), 2)} | {fmt(x.get('peak_mib'), 1)} | "
            f"{fmt(x.get('memory_vs_materialised'), 3)} | {fmt(x.get('gflop_per_s'), 1)}"
            f"{'' if x.get('cost_counted', False) else '+'} | {fmt(x.get('gb_per_s'), 2)} | {x.get('bound', '—')} | "
            f"{fmt(x.get('roof_fraction'), 2)} |")
    for x in r["rows"]:
        if "skipped" in x:
            lines.append(f"| {x['n']} | {x['mixer']} | skipped: {x['skipped']} | | | | | | | | |")
    n = max(x["n"] for x in rows)
    at = {x["mixer"]: x for x in rows if x["n"] == n and x["mixer"] in ATTENTION_SIDE}
    fast = sorted(m for m, x in at.items() if x["sdpa_over_this"] >= 4)
    slow = sorted(m for m, x in at.items() if x["sdpa_over_this"] < 4)
    small = sorted(m for m, x in at.items() if x.get("memory_vs_materialised", 1) <= 0.10)
    large = sorted(m for m, x in at.items() if x.get("memory_vs_materialised", 1) > 0.10)
    lines += ["", f"Against the issue's targets at n = {n} (the attention replacements):",
              f"- ≥ 4× faster than SDPA: met by {', '.join(fast) or 'none'}"
              + ("; not by " + ", ".join(f"{m} {at[m]['sdpa_over_this']:.2f}×" for m in slow) if slow else "") + ".",
              f"- ≤ 10% of materialised attention's memory: met by {', '.join(small) or 'none'}"
              + (f"; not by {', '.join(large)}" if large else "") + "."]
    if "ponet" in at and "fnet" in at:
        ratio = at["ponet"]["ms"] / at["fnet"]["ms"]
        # PoNet's six hidden × hidden projections (q, k, o, segment, local, dense) at the GEMM roof.
        h = r["heads"] * r["head_dim"]
        floor_ms = 6 * 2.0 * r["batch"] * n * h * h / (r["gemm_gflop_per_s"] * 1e9) * 1e3
        lines.append(f"- PoNet ≤ 1.5× FNet's time (the paper: \"slightly slower than FNet\"), mixers alone: "
                     f"{ratio:.2f}× here — {'met' if ratio <= 1.5 else 'not met'}. PoNet's six projections alone "
                     f"take {floor_ms:.1f} ms at this run's GEMM roof, {floor_ms / at['fnet']['ms']:.2f}× FNet's "
                     "whole time (FNet has no parameters); the paper times whole models, whose MLPs both share: "
                     "see the one-layer trunks below.")
    return lines


def mixer_layers_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/mixer-layers.json")))
    options = ", ".join(f"{k}: {json.dumps(v)}" for k, v in r["options"].items())
    lines = [f"One-layer trunks (embedding, pre-norm mixer + residual, pre-norm SwiGLU MLP of "
             f"{r['intermediate_size']} + residual, final norm), batch {r['batch']}, {r['heads']} heads × "
             f"{r['head_dim']}, float32, {r['threads']} threads, median of {r['repeats']} forward passes timed "
             f"interleaved across the models of one length. Options: {options}.", "",
             "| n | mixer | ms | attention layer / this | this / FNet layer |", "|---|---|---|---|---|"]
    rows = [x for x in r["rows"] if "skipped" not in x]
    for x in rows:
        lines.append(f"| {x['n']} | {x['mixer']} | {fmt(x['ms'], 1)} | {fmt(x.get('attention_over_this'), 2)} | "
                     f"{fmt(x.get('this_over_fnet'), 2)} |")
    for x in r["rows"]:
        if "skipped" in x:
            lines.append(f"| {x['n']} | {x['mixer']} | skipped: {x['skipped']} | | |")
    lines.append("")
    for n in sorted({x["n"] for x in rows}):
        ponet = [x for x in rows if x["n"] == n and x["mixer"] == "ponet" and "this_over_fnet" in x]
        if ponet:
            ratio = ponet[0]["this_over_fnet"]
            lines.append(f"- n = {n}: the PoNet layer takes {ratio:.2f}× the FNet layer's time — PoNet ≤ 1.5× FNet "
                         f"as whole layers: {'met' if ratio <= 1.5 else 'not met'}.")
    return lines


def convnet_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/convnet.json")))
    rows = {x["row"]: x for x in r["rows"]}
    train, infer, rep = rows["metanext_train"], rows["metanext_infer"], rows["unireplknet_infer"]
    lines = [f"Batch {r['batch']} of {r['size']}×{r['size']}×1, width {r['width']}, float32, medians of "
             f"{r['repeats']} (`bench/results/convnet.json`).", "",
             "| row | images/s | against | ratio |", "|---|---|---|---|",
             f"| train: InceptionNeXt / 7×7 DW | {train['inception_dw_images_s']:.0f} | "
             f"{train['dwconv7_images_s']:.0f} | **{train['ratio']:.2f}×** |",
             f"| inference: InceptionNeXt / 7×7 DW | {infer['inception_dw_images_s']:.0f} | "
             f"{infer['dwconv7_images_s']:.0f} | {infer['ratio']:.2f}× |",
             f"| inference: UniRepLKNet deploy / training form (max \\|logit diff\\| {rep['max_logit_diff']:.1e}) | "
             f"{rep['deploy_images_s']:.0f} | {rep['training_images_s']:.0f} | **{rep['ratio']:.2f}×** |"]
    peers_path = os.path.join(ROOT, "bench/peers/results/convnet.json")
    if os.path.exists(peers_path):
        p = json.load(open(peers_path))
        lines += ["", f"Against timm {p['timm']} (torch {p['torch']}) at the same shape, {p['threads']} threads, medians "
                  f"of {p['repeats']} (`bench/peers/convnet.py`: timm's MetaNeXt with its stem set to lowrank's 2×2 "
                  "patch; each side timed in its own process in one run):", "",
                  "| row | mixer | lowrank images/s | timm images/s | lowrank / timm |", "|---|---|---|---|---|"]
        for x in p["rows"]:
            if "lowrank_images_s" in x:
                lines.append(f"| {x['row']} | {x['mixer']} | {x['lowrank_images_s']:.0f} | {x['timm_images_s']:.0f} | "
                             f"{x['lowrank_over_timm']:.2f}× |")
        lines += ["", "| row | InceptionNeXt / 7×7 DW, lowrank | the same, timm |", "|---|---|---|"]
        for x in p["rows"]:
            if "timm_ratio" in x:
                lines.append(f"| {x['row']} | {x['lowrank_ratio']:.2f}× | {x['timm_ratio']:.2f}× |")
    return lines


def neighborhood_case(row):
    """'1d_L4096_k15_causal_d2' -> '1-D, L 4096, k 15, dilation 2, causal'; '2d_64x64_k7' -> '2-D, 64 × 64, 7 × 7'."""
    parts = row.split("_")
    if parts[0] == "1d":
        text = f"1-D, L {parts[1][1:]}, k {parts[2][1:]}"
        extra = parts[3:]
        if any(p.startswith("d") for p in extra):
            text += f", dilation {[p for p in extra if p.startswith('d')][0][1:]}"
        return text + (", causal" if "causal" in extra else "")
    h, w = parts[1].split("x")
    k = parts[2][1:]
    return f"2-D, {h} × {w}, {k} × {k}"


def neighborhood_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/neighborhood.json")))
    lines = [f"Batch {r['batch']}, {r['heads']} heads × {r['head_dim']}, {r['dtype']}, {r['threads']} threads, "
             f"medians of {r['repeats']}.", "",
             "| case | naive | tiled | naive / tiled | max \\|diff\\| |", "|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {neighborhood_case(x['row'])} | {x['naive_ms']:.1f} ms | {x['tiled_ms']:.1f} ms | "
                     f"**{x['naive_over_tiled']:.1f}×** | {x['max_abs_diff']:.1e} |")
    return lines


def mamba_decode_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/mamba_decode.json")))
    lines = [f"Batch {r['batch']}, {r['dtype']}, {r['threads']} threads, the median of {r['steps']} steps. Warm: each "
             "(model, context) decodes its steps back to back. Interleaved: one step of every (model, context) "
             "per round, so that the machine's drift falls on all alike; the flatness is read there.", "",
             "| context | Mamba tok/s | Llama tok/s | Mamba / Llama | interleaved: Mamba tok/s | Llama tok/s "
             "| Mamba / Llama | Mamba vs its shortest | Llama vs its shortest |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['context']} | {x['mamba_tokens_per_s']:.0f} | {x['llama_tokens_per_s']:.0f} | "
                     f"**{x['mamba_over_llama']:.2f}×** | {x['interleaved_mamba_tokens_per_s']:.0f} | "
                     f"{x['interleaved_llama_tokens_per_s']:.0f} | {x['interleaved_mamba_over_llama']:.2f}× | "
                     f"{x['mamba_relative_to_shortest']:.2f} | {x['llama_relative_to_shortest']:.2f} |")
    spread = [x["mamba_relative_to_shortest"] for x in r["rows"]]
    at8k = [x for x in r["rows"] if x["context"] == 8192]
    lines += ["", f"- Mamba's interleaved tok/s within 10% of its shortest context's at every context: "
              f"{min(spread):.2f}–{max(spread):.2f} — {'met' if max(abs(v - 1) for v in spread) <= 0.10 else 'not met'}."]
    if at8k:
        x = at8k[0]
        ok = x["mamba_over_llama"] >= 3 and x["interleaved_mamba_over_llama"] >= 3
        lines.append(f"- Mamba ≥ 3× Llama at 8K: {x['mamba_over_llama']:.2f}× warm, "
                     f"{x['interleaved_mamba_over_llama']:.2f}× interleaved — {'met' if ok else 'not met'}.")
    return lines


def fft_conv_lines():
    r = json.load(open(os.path.join(ROOT, "bench/results/fft_conv.json")))
    lines = [f"H = {r['channels']} channels, batch {r['batch']}, {r['dtype']}, {r['threads']} threads, medians of "
             f"{r['repeats']}; crossover L* = {r['crossover_length']}.", "",
             "| L | direct | FFT conv | direct / FFT | Monarch conv | at::fft (2L) | Monarch FFT (2L) | at::fft / Monarch |",
             "|---|---|---|---|---|---|---|---|"]

    def ms(v):
        return "–" if v is None else f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"

    for x in r["rows"]:
        ratio = f"**{x['direct_over_fft']:.1f}×**" if "direct_over_fft" in x else "–"
        lines.append(f"| {x['L']} | {ms(x.get('direct_ms'))} | {ms(x['fft_ms'])} | {ratio} | "
                     f"{ms(x['monarch_conv_ms'])} | {ms(x['at_fft_ms'])} | {ms(x['monarch_fft_ms'])} | "
                     f"{x['at_fft_over_monarch']:.2f}× |")
    return lines


def main():
    write_named_tables(os.path.join(ROOT, "docs/benchmarks.md"), [
        ("mixers", mixers_lines()),
        ("listops-train", listops_train_lines()),
        ("s4-kernel", s4_kernel_lines()),
        ("selective-scan", selective_scan_lines()),
        ("mixer-layers", mixer_layers_lines()),
        ("convnet", convnet_lines()),
        ("neighborhood", neighborhood_lines()),
        ("mamba-decode", mamba_decode_lines()),
        ("fft-conv", fft_conv_lines()),
    ])


if __name__ == "__main__":
    main()
