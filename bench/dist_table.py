#!/usr/bin/env python3
"""Writes the measured traffic, overlap and scaling-model tables of docs/distributed.md from
bench/results/dist.json (written by build/bin/bench_dist), between the page's table markers."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "repro"))
from readme_table import replace_between_markers  # noqa: E402

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
r = json.load(open(os.path.join(root, "bench/results/dist.json")))
m = r["model"]
lines = [
    f"Measured by `bench_dist` ({r['world_size']} ranks as threads over loopback Gloo, {r['threads_per_rank']} "
    f"thread each, the `{m['preset']}` model: {m['parameters'] / 1e6:.2f} M parameters, batch "
    f"{m['batch_per_rank']} × {m['seq_len']} tokens per rank; medians; from `bench/results/dist.json`). "
    f"The initial weight broadcast moves {r['weight_broadcast_bytes'] / 1e6:.2f} MB once.",
    "",
    "| bucket cap | buckets | all-reduced per step | ring bytes per rank | backward alone | backward with the Reducer | all-reduce alone | exposed | overlap |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for c in r["configs"]:
    lines.append(
        f"| {c['bucket_mb']:g} MiB | {c['buckets']} | {c['allreduce_bytes_per_step'] / 1e6:.2f} MB | "
        f"{c['ring_bytes_per_rank'] / 1e6:.2f} MB | {1e3 * c['backward_s']:.1f} ms | "
        f"{1e3 * c['backward_with_reducer_s']:.1f} ms | {1e3 * c['allreduce_alone_s']:.1f} ms | "
        f"{1e3 * c['exposed_communication_s']:.1f} ms | {c['overlap']:.2f} |")
lines += [
    "",
    f"Each rank's training state (2 trainer steps of the same model, 2 ranks; ZeRO-1 also broadcasts "
    f"{r['zero1_broadcast_bytes_per_step'] / 1e6:.2f} MB of weights from their owners per step):",
    "",
    "| optimizer | ZeRO | optimizer states, rank 0 / rank 1 | projectors, rank 0 / rank 1 | weights + gradients per rank |",
    "|---|---:|---:|---:|---:|",
]
for m_ in r["memory"]:
    p0, p1 = m_["per_rank"]
    lines.append(
        f"| {m_['optimizer']} | {m_['zero']} | {p0['optimizer_states'] / 1e6:.2f} / {p1['optimizer_states'] / 1e6:.2f} MB | "
        f"{p0['projectors'] / 1e6:.3f} / {p1['projectors'] / 1e6:.3f} MB | "
        f"{(p0['weights'] + p0['grads']) / 1e6:.2f} MB |")
s = r["scaling_model"]
bw = s["bandwidth_bytes_per_s"]
lines += [
    "",
    f"Scaling model for `{s['preset']}` ({s['parameters'] / 1e6:.1f} M parameters, float32 gradients): a ring "
    f"all-reduce moves 2(N−1)/N × 4Ψ bytes per rank; times at nominal bandwidths (NVLink {bw['nvlink'] / 1e9:.0f} GB/s, "
    f"10 GbE {bw['10gbe'] / 1e9:.2f} GB/s), the exposed part at the overlap measured above with 1 MiB buckets "
    f"({s['overlap_used']:.2f}).",
    "",
    "| ranks N | bytes per rank | all-reduce, NVLink | exposed, NVLink | all-reduce, 10 GbE | exposed, 10 GbE |",
    "|---:|---:|---:|---:|---:|---:|",
]
for row in s["rows"]:
    lines.append(
        f"| {row['ranks']} | {row['ring_bytes_per_rank'] / 1e6:.1f} MB | {1e3 * row['allreduce_s_nvlink']:.2f} ms | "
        f"{1e3 * row['exposed_s_nvlink']:.2f} ms | {1e3 * row['allreduce_s_10gbe']:.0f} ms | "
        f"{1e3 * row['exposed_s_10gbe']:.0f} ms |")
replace_between_markers(os.path.join(root, "docs/distributed.md"), "\n".join(lines))
