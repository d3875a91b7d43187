"""The kernel methods against their peers (issue 22's performance table), in one run.

For every row below, runs build/bin/bench_kernel_methods (ours) and bench/peers/kernel_methods.py
(each peer, in the Python environment that carries it) one after the other at the same shape, and
writes the ratio peer seconds / our seconds beside the issue's target; then the fitted cost slopes
in n of ours (least squares of log seconds on log n). Everything runs with --threads threads (1 by
default: on a shared machine a second thread mostly measures the other load) and float64.

Environments: neural-tangents in .venv-nt (scripts/requirements-nt.txt); scikit-learn, torch,
gpytorch, opacus, qiskit, qiskit-machine-learning and DPPy in the peer stack .venv-peers
(scripts/requirements-peers.txt). A peer whose environment is missing or fails is reported as
skipped with its error, and the run goes on.

  python3 bench/kernel_methods.py --out bench/results/kernel_methods.json [--threads 1] [--repeats 3]
      [--peers-python .venv-peers/bin/python] [--nt-python .venv-nt/bin/python] [--quick]
  python3 bench/kernel_methods.py --table bench/results/kernel_methods.json   # the Markdown tables
  python3 bench/kernel_methods.py --doc bench/results/kernel_methods.json     # rewrite them in
                                                                               # docs/benchmarks.md
Needs only Python 3 (the peers run in their environments).
"""
import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from decode import machine  # noqa: E402  lscpu model, CPUs and SIMD flags, commit

OURS = ROOT / "build" / "bin" / "bench_kernel_methods"
PEER = ROOT / "bench" / "peers" / "kernel_methods.py"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- kernel_methods table: begin -->", "<!-- kernel_methods table: end -->"

# (workload, shape, peers, target ×, the issue's shape where ours is smaller). Shapes are cut where
# the issue's would take more than ~2 minutes for one side on this 2-core machine.
ROWS = [
    ("ntk_gram", {"n": 2000, "d": 64, "depth": 3}, ["neural_tangents"], 1, "n=4000"),
    ("empirical_ntk", {"n": 256, "d": 64, "depth": 2, "width": 512}, ["neural_tangents", "torch_func"], 3,
     "n=512, width 1024"),
    ("rf_path", {"n": 2000, "d": 20, "k": 1000, "lambdas": 30}, ["sklearn"], 3, "n=4000, k=2000"),
    ("krr", {"n": 4000, "d": 8}, ["sklearn"], 1.2, "n=8000"),
    ("kde", {"n": 10000, "m": 1000, "d": 24}, ["sklearn"], 5, "n=50k, q=2k"),
    ("quantum_gram", {"n": 200, "qubits": 8}, ["qiskit_ml"], 20, ""),
    ("dpp", {"n": 50}, ["dppy_chain_rule", "dppy_tridiagonal"], 5, ""),
    ("gp", {"n": 2000, "d": 8}, ["gpytorch"], 1, ""),
]
# (workload, fixed shape, the n values, a shape function of n, expected slope).
SLOPES = [
    ("krr", {"d": 8}, [1000, 2000, 4000], lambda n: {}, 3),
    ("kde", {"d": 24}, [2500, 5000, 10000], lambda n: {"m": n // 5}, 2),
    ("ntk_gram", {"d": 64, "depth": 3}, [500, 1000, 2000], lambda n: {}, 2),
    ("rf_path", {"d": 20, "k": 200, "lambdas": 30}, [2000, 4000, 8000], lambda n: {}, 1),
    ("sparse_dkm", {"d": 10, "k": 64}, [1000, 2000, 4000], lambda n: {}, 1),
    ("funbat", {}, [1000, 2000, 4000], lambda n: {}, 1),
    ("dp_query", {"d": 32, "m": 1000}, [2500, 10000, 40000], lambda n: {}, 0),
]
PEER_ENV = {"neural_tangents": "nt"}
LABELS = {
    "ntk_gram": "NTK Gram (ReLU, L={depth}, d={d}), n={n}",
    "empirical_ntk": "empirical NTK (L={depth}, width {width}, d={d}), n={n}",
    "rf_path": "RF λ-path ({lambdas} λ), n={n}, k={k}",
    "krr": "KRR RBF (d={d}), n={n}",
    "kde": "exact KDE (d={d}), n={n}, q={m}",
    "quantum_gram": "quantum Gram, {qubits} qubits, {n}²",
    "dpp": "projection DPP (Legendre), m={n}",
    "gp": "GP evidence + gradient (d={d}), n={n}",
    "dp_classifier": "DP classifier ε=1",
}


def thread_env(threads):
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LOWRANK_NUM_THREADS"):
        env[key] = str(threads)
    if threads == 1:  # XLA's CPU client: one intra-op thread, no multi-threaded Eigen
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def flags(shape):
    out = []
    for key, value in shape.items():
        out += [f"--{key}", str(value)]
    return out


def run_json(command, env, timeout):
    """The last JSON line `command` prints, or {"skipped": reason}."""
    t0 = time.time()
    try:
        p = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"skipped": f"{type(e).__name__}: {e}"[:300]}
    if p.returncode != 0:
        return {"skipped": (p.stderr.strip().splitlines() or ["exit code %d" % p.returncode])[-1][:300]}
    result = json.loads(p.stdout.strip().splitlines()[-1])
    result["wall"] = time.time() - t0
    return result


class Runner:
    def __init__(self, a):
        self.a, self.env, self.ours_cache = a, thread_env(a.threads), {}

    def ours(self, workload, shape):
        key = json.dumps([workload, shape], sort_keys=True)
        if key not in self.ours_cache:
            command = [str(OURS), "--workload", workload, *flags(shape), "--repeats", str(self.a.repeats),
                       "--threads", str(self.a.threads)]
            self.ours_cache[key] = run_json(command, self.env, self.a.timeout)
            print(f"ours  {workload} {shape}: {self.ours_cache[key].get('seconds', self.ours_cache[key])}",
                  file=sys.stderr)
        return self.ours_cache[key]

    def peer(self, workload, peer, shape):
        python = self.a.nt_python if PEER_ENV.get(peer) == "nt" else self.a.peers_python
        if not pathlib.Path(ROOT / python).exists() and not pathlib.Path(python).exists():
            return {"skipped": f"{python} does not exist"}
        command = [python, str(PEER), "--workload", workload, "--peer", peer, *flags(shape), "--repeats",
                   str(self.a.repeats), "--threads", str(self.a.threads)]
        result = run_json(command, self.env, self.a.timeout)
        print(f"peer  {workload}/{peer} {shape}: {result.get('seconds', result)}", file=sys.stderr)
        return result


def dp_classifier_row(runner):
    """The DP classifier (dp_similarity's fit, in bench_kernel_methods) against opacus on one data file."""
    row = {"workload": "dp_classifier", "shape": {"n": 10000, "d": 32}, "target": 100, "issue_shape": "5k/class",
           "label": LABELS["dp_classifier"]}
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp) / "gaussians.safetensors"
        make = ("import numpy as np, sys; from safetensors.numpy import save_file; r = np.random.default_rng(1); "
                "mu = 3 * r.normal(size=(10, 32)) / np.sqrt(32); y = np.repeat(np.arange(10), 1000); "
                "save_file({'x': mu[y] + r.normal(size=(10000, 32)), 'y': y.astype(np.float64)}, sys.argv[1])")
        subprocess.run([runner.a.peers_python, "-c", make, str(data)], check=True, cwd=ROOT)
        ours = runner.ours("dp_classifier", {"n": 10000, "data": str(data), "epsilon": 1.0})
        command = [runner.a.peers_python, str(PEER), "--workload", "dp_classifier", "--peer", "opacus", "--data",
                   str(data), "--repeats", "1", "--threads", str(runner.a.threads)]
        row.update({"ours": ours, "peers": {"opacus": run_json(command, runner.env, runner.a.timeout)}})
    return row


def fit_slope(ns, seconds):
    xs, ys = [math.log(n) for n in ns], [math.log(s) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def measure(a):
    runner = Runner(a)
    load_before = os.getloadavg()
    rows = []
    for workload, shape, peers, target, issue_shape in ROWS:
        if a.quick:
            shape = {k: (max(2, v // 8) if k in ("n", "m", "k", "width") and workload != "dpp" else v)
                     for k, v in shape.items()}
        row = {"workload": workload, "shape": shape, "target": target, "issue_shape": issue_shape,
               "label": LABELS[workload].format(**{"m": 0, "k": 0, "width": 0, "depth": 0, "d": 0, "qubits": 0,
                                                   "lambdas": 0, **shape}),
               "ours": runner.ours(workload, shape), "peers": {}}
        for peer in peers:
            row["peers"][peer] = runner.peer(workload, peer, shape)
        rows.append(row)
    rows.append(dp_classifier_row(runner))
    slopes = []
    for workload, fixed, ns, extra, expected in SLOPES:
        if a.quick:
            ns = [max(2, n // 8) for n in ns]
        points = [(n, runner.ours(workload, {"n": n, **fixed, **extra(n)})) for n in ns]
        ok = [(n, p["seconds"]) for n, p in points if "seconds" in p]
        slopes.append({"workload": workload, "fixed": fixed, "ns": ns, "expected": expected,
                       "shapes": [{"n": n, **fixed, **extra(n)} for n in ns],
                       "seconds": [p.get("seconds") for _, p in points],
                       "slope": fit_slope(*zip(*ok)) if len(ok) >= 2 else None})
    return {"machine": machine(), "threads": a.threads, "repeats": a.repeats, "quick": a.quick,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows, "slopes": slopes}


def table(results):
    lines = ["| workload (here) | issue's shape | peer | ours s | peer s | ratio (peer/ours) | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        label, issue = row["label"], row.get("issue_shape") or "same"
        if "skipped" in row:
            lines.append(f"| {label} | {issue} | — | — | — | skipped: {row['skipped']} | ≥{row['target']}× | — |")
            continue
        ours = row["ours"]
        for peer, p in row["peers"].items():
            name = f"{p.get('package', peer)} {p.get('version', '')}".strip()
            if peer == "dppy_tridiagonal":
                name += " (tridiagonal model)"
            if peer == "dppy_chain_rule":
                name += " (chain rule)"
            if "seconds" not in ours or "seconds" not in p:
                reason = ours.get("skipped") or p.get("skipped")
                lines.append(f"| {label} | {issue} | {name} | {ours.get('seconds', '—')} | {p.get('seconds', '—')} | "
                             f"skipped: {reason} | "
                             f"≥{row['target']}× | — |")
                continue
            ratio = p["seconds"] / ours["seconds"]
            met = "yes" if ratio >= row["target"] else "no"
            lines.append(f"| {label} | {issue} | {name} | {ours['seconds']:.4g} | {p['seconds']:.4g} | {ratio:.2f}× | "
                         f"≥{row['target']}× | {met} |")
    lines += ["", "| ours: cost in n | shapes | seconds | fitted slope | expected |", "|---|---|---|---|---|"]
    for s in results["slopes"]:
        shapes = ", ".join(f"n={sh['n']}" + (f" q={sh['m']}" if "m" in sh else "") for sh in s["shapes"])
        fixed = ", ".join(f"{k}={v}" for k, v in s["fixed"].items())
        secs = ", ".join("—" if t is None else f"{t:.3g}" for t in s["seconds"])
        slope = "—" if s["slope"] is None else f"{s['slope']:.2f}"
        name = f"{s['workload']} ({fixed})" if fixed else s["workload"]
        lines.append(f"| {name} | {shapes} | {secs} | {slope} | {s['expected']} |")
    m = results["machine"]
    lines += ["", f"Measured {results['date']} on {m.get('cpu', '?')} ({m.get('cpus', '?')} CPUs), "
              f"{results['threads']} thread(s), median of {results['repeats']} after a warm-up; load average "
              f"{results['loadavg_before'][0]:.1f} before, {results['loadavg_after'][0]:.1f} after (commit "
              f"{m.get('commit', '?')})."]
    if "dp_row_measured" in results:
        d = results["dp_row_measured"]
        lines += ["", f"The DP-classifier row was measured separately, {d['date']} (load average "
                  f"{d['loadavg_before'][0]:.1f} before, {d['loadavg_after'][0]:.1f} after)."]
    lines += ["", "The DP-classifier row times dp_similarity's fit in the library (the file read outside the "
              "timing; the median of the repeats after a warm-up) against one run of opacus's training loop, "
              "after the imports. Accuracy is not compared here (the dp_similarity reproduction reports it)."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--table")
    parser.add_argument("--doc")
    parser.add_argument("--rerun-dp", metavar="RESULTS",
                        help="re-measure only the DP-classifier row of an existing results file (in place)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="every size ÷8: a smoke test of the pipeline")
    parser.add_argument("--peers-python", default=".venv-peers/bin/python")
    parser.add_argument("--nt-python", default=".venv-nt/bin/python")
    a = parser.parse_args()
    if a.table:
        print(table(json.loads(pathlib.Path(a.table).read_text())))
    elif a.doc:
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + table(json.loads(pathlib.Path(a.doc).read_text())) + "\n" + text[end:])
    elif a.rerun_dp:
        path = pathlib.Path(a.rerun_dp)
        results = json.loads(path.read_text())
        load = os.getloadavg()
        row = dp_classifier_row(Runner(a))
        results["rows"] = [r for r in results["rows"] if r["workload"] != "dp_classifier"] + [row]
        results["dp_row_measured"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                      "loadavg_before": load, "loadavg_after": os.getloadavg()}
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(table(results))
    elif a.out:
        results = measure(a)
        pathlib.Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
        print(table(results))
    else:
        parser.error("one of --out, --table, --doc, --rerun-dp")


if __name__ == "__main__":
    main()
