"""Batch-1 decode across models, weight formats, thread counts and both decode paths, in one run.

Runs build/bin/bench_runtime --decode-only for every combination of
  model    the `small` and `galore-60m` pretraining presets' shapes (random weights), and the
           quickstart model (runs/quickstart/model) when it exists
  format   float32, bfloat16 (--dtype) and rtn INT4 (--rtn-bits 4: every decoder slot in groups
           of 64, or 32 where 64 does not divide the input width (galore-60m), lm_head float32, as
           `lowrank compress --method rtn --bits 4`)
  threads  1 and 2
  path     the fused single-token step (nn/decode_step.h) and the ATen path (--no-fused)
and writes one JSON file with every run's output plus the machine (lscpu model and flags) and the
commit; then, for the `small` shape in bfloat16 at 2 threads, the same cases under each thread
placement and OpenMP wait policy (POLICIES). --table renders the Markdown tables of docs/benchmarks.md from such a file, so the table is
always built from a committed result, never pasted. Needs only Python 3 (no torch).

  python3 bench/decode.py --out bench/results/decode.json [--repeats 5] [--quick]
  python3 bench/decode.py --table bench/results/decode.json
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORMATS = {"float32": [], "bfloat16": ["--dtype", "bfloat16"], "rtn4": ["--rtn-bits", "4"]}


def machine():
    info = {"python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                info["cpu"] = value.strip()
            if key.strip() == "Flags":
                flags = value.split()
                info["simd"] = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c"))]
            if key.strip() == "CPU(s)":
                info["cpus"] = int(value)
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


# Thread placement and OpenMP wait policy, 2 threads (issue 26: "report both"): by default lowrank
# leaves its threads to the scheduler; LOWRANK_BIND_THREADS=1 binds them (core/threads.h).
POLICIES = {
    "unbound (default)": {},
    "bound (LOWRANK_BIND_THREADS=1)": {"LOWRANK_BIND_THREADS": "1"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "OMP_PROC_BIND=true (libgomp binds)": {"OMP_PROC_BIND": "true"},
}


def run_case(bench, model_args, fmt, threads, fused, repeats, env=None):
    cmd = [str(bench), *model_args, *FORMATS[fmt], "--decode-only", "--threads", str(threads),
           "--repeats", str(repeats), "--json"]
    if not fused:
        cmd.append("--no-fused")
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("LOWRANK_BIND_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES")}
    full_env.update(env or {})
    done = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if done.returncode != 0:
        sys.exit(f"bench/decode.py: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def measure(args):
    bench = pathlib.Path(args.bench)
    if not bench.is_file():
        sys.exit(f"bench/decode.py: {bench} does not exist; build it with scripts/build --target bench_runtime")
    models = {"small": ["--preset", "small"], "galore-60m": ["--preset", "galore-60m"]}
    quickstart = ROOT / "runs" / "quickstart" / "model"
    if (quickstart / "config.json").is_file():
        models["quickstart"] = ["--model", str(quickstart)]
    if args.quick:
        models = {"small": models["small"]}
    runs = []
    for name, model_args in models.items():
        for fmt in FORMATS:
            for threads in (1, 2):
                for fused in (True, False):
                    out = run_case(bench, model_args, fmt, threads, fused, args.repeats)
                    g = out["generation"]["1"]
                    print(f"{name:11s} {fmt:9s} {threads} thread(s) {'fused' if fused else 'aten '}: "
                          f"decode {g['decode_tokens_per_second']:8.1f} tok/s, prefill "
                          f"{g['prefill_tokens_per_second']:8.0f} tok/s", flush=True)
                    runs.append({"model": name, "format": fmt, "threads": threads,
                                 "path": "fused" if fused else "aten", "result": out})
    policies = []
    for label, env in POLICIES.items():
        for fused in (True, False):
            out = run_case(bench, models["small"], "bfloat16", 2, fused, args.repeats, env)
            g = out["generation"]["1"]
            print(f"small bfloat16 2 threads {label} {'fused' if fused else 'aten'}: decode "
                  f"{g['decode_tokens_per_second']:.1f} tok/s, prefill {g['prefill_tokens_per_second']:.0f} tok/s",
                  flush=True)
            policies.append({"policy": label, "env": env, "path": "fused" if fused else "aten", "result": out})
    result = {"machine": machine(), "repeats": args.repeats, "runs": runs, "policies": policies}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
        json.dump(result, f, indent=1)
        tmp = f.name
    os.replace(tmp, out)
    print(f"wrote {out}")
    print(table(result))


def table(result):
    runs = {(r["model"], r["format"], r["threads"], r["path"]): r["result"] for r in result["runs"]}

    def decode(key):
        r = runs.get(key)
        return r["generation"]["1"]["decode_tokens_per_second"] if r else None

    lines = ["| model | format | MB read / token | fused 1 thread | fused 2 threads | 2 ÷ 1 threads | "
             "ATen 1 thread | ATen 2 threads | fused ÷ ATen (1 / 2 threads) | GB/s at 2 threads | "
             "% of DRAM read bandwidth |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    models = list(dict.fromkeys(k[0] for k in runs))
    formats = list(dict.fromkeys(k[1] for k in runs))
    for m in models:
        for f in formats:
            f1, f2 = decode((m, f, 1, "fused")), decode((m, f, 2, "fused"))
            a1, a2 = decode((m, f, 1, "aten")), decode((m, f, 2, "aten"))
            if None in (f1, f2, a1, a2):
                continue
            roof = runs[(m, f, 2, "fused")]["roofline"]
            lines.append(
                f"| {m} | {f} | {roof['decode_bytes_per_token'] / 1e6:.1f} | {f1:.0f} | {f2:.0f} | {f2 / f1:.2f} | "
                f"{a1:.0f} | {a2:.0f} | {f1 / a1:.2f} / {f2 / a2:.2f} | {roof['decode_gbs']:.1f} | "
                f"{roof['decode_percent_of_bandwidth']:.0f} |")
    if result.get("policies"):
        lines += ["", "Thread placement and wait policy (`small`, bfloat16, 2 threads):", "",
                  "| threads | fused decode tok/s | ATen decode tok/s | prefill tok/s (ATen) |", "|---|---|---|---|"]
        by = {(p["policy"], p["path"]): p["result"]["generation"]["1"] for p in result["policies"]}
        for label in dict.fromkeys(p["policy"] for p in result["policies"]):
            f, a = by.get((label, "fused")), by.get((label, "aten"))
            if f and a:
                lines.append(f"| {label} | {f['decode_tokens_per_second']:.0f} | {a['decode_tokens_per_second']:.0f} | "
                             f"{a['prefill_tokens_per_second']:.0f} |")
    mach = result["machine"]
    bw = next(iter(runs.values()))["roofline"]["read_bandwidth_gbs"]
    lines.append("")
    lines.append(f"Machine: {mach.get('cpu', '?')}, {mach.get('cpus', '?')} CPUs "
                 f"({', '.join(mach.get('simd', []))}); commit {mach.get('commit', '?')}; medians of "
                 f"{result['repeats']} runs; measured read bandwidth {bw['threads_1']['before']:.1f} GB/s "
                 f"(1 thread), {bw['threads_n']['before']:.1f} GB/s (2 threads).")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the results JSON here")
    parser.add_argument("--table", help="print the Markdown table of this results JSON")
    parser.add_argument("--docs", action="store_true",
                        help="with --table: write it between docs/benchmarks.md's decode table markers instead")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the small preset only")
    parser.add_argument("--bench", default=str(pathlib.Path(os.environ.get("LOWRANK_BUILD_DIR", ROOT / "build"))
                                               / "bin" / "bench_runtime"))
    args = parser.parse_args()
    if args.table:
        try:
            result = json.loads(pathlib.Path(args.table).read_text())
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"bench/decode.py: cannot read {args.table}: {e}")
        if args.docs:
            sys.path.insert(0, str(ROOT / "repro"))
            from readme_table import write_named_tables
            write_named_tables(str(ROOT / "docs/benchmarks.md"), [("decode", table(result).split("\n"))])
        else:
            print(table(result))
    elif args.out:
        measure(args)
    else:
        parser.error("give --out FILE (measure) or --table FILE (render)")


if __name__ == "__main__":
    main()
