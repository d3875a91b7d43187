"""SpGEMM, C = A*A: lowrank's kernels and Eigen 3.4 (build/bin/bench_spgemm, run by this script
first) against scipy.sparse and Intel MKL (mkl_sparse_spmm through sparse_dot_mkl), in one run on
one machine, on the same matrices: each graph is written once by `lowrank spgemm --generate` and
read here, so every side multiplies the same bytes.

Threads: lowrank's hash and MKL run on --threads threads; scipy.sparse (csr_matmat) and Eigen's
product are sequential, so their rows are one thread (bench_spgemm also times our hash kernel on one
thread: hash_1thread). Targets (issue: SMASH SpGEMM), R-MAT scale 14, 2 threads: ≥ 1.5× Eigen,
≥ 2× scipy.sparse, ≥ 0.8× MKL.

Run with the peer stack (after scripts/build --target bench_spgemm lowrank_cli):
  .venv-peers/bin/python bench/peers/spgemm.py [--threads 2] [--repeats 3]
      [--graphs rmat:10,...,rmat:16] [--out bench/results/spgemm.json]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
import scipy.sparse as sp
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRAPHS = "rmat:10,rmat:11,rmat:12,rmat:13,rmat:14,rmat:15,rmat:16,er:16384:16,stencil2d:256,stencil3d:40"


def load_mkl(threads):
    """sparse_dot_mkl finds MKL through MKL_RT; the mkl wheel puts libmkl_rt in the venv's lib/."""
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if "MKL_RT" not in os.environ:
        found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
        if found:
            os.environ["MKL_RT"] = found[0]
    try:
        from sparse_dot_mkl import dot_product_mkl
        import importlib.metadata as md
        return dot_product_mkl, md.version("mkl")
    except Exception as e:  # the row says why it is missing
        print(f"MKL unavailable: {e}", file=sys.stderr)
        return None, None


def interleaved_medians(fns, repeats):
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--graphs", default=GRAPHS)
    p.add_argument("--out", default=os.path.join(ROOT, "bench/results/spgemm.json"))
    p.add_argument("--build", default=os.environ.get("LOWRANK_BUILD_DIR", os.path.join(ROOT, "build")))
    args = p.parse_args()
    dot_mkl, mkl_version = load_mkl(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), LOWRANK_NUM_THREADS=str(args.threads))
    binary = os.path.join(args.build, "bin")

    with tempfile.TemporaryDirectory() as tmp:
        ours_path = os.path.join(tmp, "ours.json")
        subprocess.run([os.path.join(binary, "bench_spgemm"), "--graphs", args.graphs, "--repeats",
                        str(args.repeats), "--out", ours_path], check=True, env=env)
        with open(ours_path) as f:
            ours = json.load(f)
        rows = []
        for row in ours["rows"]:
            spec = row["graph"]
            path = os.path.join(tmp, spec.replace(":", "_") + ".safetensors")
            subprocess.run([os.path.join(binary, "lowrank"), "-q", "spgemm", "--generate", spec, "--out", path],
                           check=True, env=env)
            t = load_file(path)
            rows_, cols = (int(x) for x in t["shape"])
            a = sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=(rows_, cols))
            assert a.nnz == row["nnz_a"], (spec, a.nnz, row["nnz_a"])
            fns, names = [lambda: a @ a], ["scipy"]
            if dot_mkl is not None:
                fns.append(lambda: dot_mkl(a, a))
                names.append("mkl")
            medians = interleaved_medians(fns, args.repeats)
            c = a @ a
            check = {"scipy_nnz": int(c.nnz)}
            if dot_mkl is not None:
                m = dot_mkl(a, a)
                check["mkl_max_abs_diff"] = float(abs(m - c).max()) if c.nnz else 0.0
            peers = {n: s for n, s in zip(names, medians)}
            hash_s = row["seconds"]["hash"]
            ratios = {f"{n}_over_hash": peers[n] / hash_s for n in peers}
            if "eigen" in row["seconds"]:
                ratios["eigen_over_hash"] = row["seconds"]["eigen"] / hash_s
            row = dict(row, peer_seconds=peers, ratios=ratios, peer_check=check)
            rows.append(row)
            print(f"{spec:15s} hash {hash_s * 1e3:9.2f} ms  " +
                  "  ".join(f"{k} {v:6.2f}x" for k, v in ratios.items()), flush=True)
    result = {"benchmark": "spgemm", "product": "A*A", "threads": args.threads, "repeats": args.repeats,
              "eigen": ours["eigen"], "scipy": scipy.__version__, "numpy": np.__version__, "mkl": mkl_version,
              "rows": rows}
    tmp_out = args.out + ".tmp"
    with open(tmp_out, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
