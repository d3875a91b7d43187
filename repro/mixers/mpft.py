"""The MPFT + PEFT row of repro/mixers (Halloran, Gulati & Roysdon, 2025, "Mamba State-Space Models Are
Lyapunov-Stable Learners", TMLR, arXiv:2406.00209): how far a fine-tune in reduced precision lands
from its float32 twin, for Mamba and for a Transformer of the same size.

  mpft.py windows DATASET_DIR OUT.safetensors [--count 8] [--length 128]
      held-out windows: the first COUNT non-overlapping windows of LENGTH tokens of the dataset's
      validation split, as int64 input_ids [COUNT, LENGTH] (what `lowrank logits` reads)
  mpft.py collect OUT.json --family F --input WINDOWS --cell SET/PRECISION/SEED=RUN_DIR:LOGITS ...
      [--lyapunov NAME=LYAPUNOV_JSON ...]
      one result file: per cell and seed, the mean KL(p_fp32 || p_cell) of the next-token
      distributions over every scored position (the float32 run of the same target set and seed is
      the reference), the
      perplexity of the windows and |Δppl| / ppl against the reference, and the run's final
      training loss and validation perplexity (finetune.json); per named Lyapunov report, whether
      every exponent of every layer is negative and the largest exponent.

KL and perplexity are computed here in float64 from the float32 logits `lowrank logits` wrote.
"""
import argparse
import json
import math
import os

import numpy as np
from safetensors.numpy import load_file, save_file


def windows(args):
    info = json.load(open(os.path.join(args.dataset, "dataset.json")))
    dtype = {"uint16": np.uint16, "uint32": np.uint32}[info["dtype"]]
    tokens = np.fromfile(os.path.join(args.dataset, "validation.bin"), dtype=dtype).astype(np.int64)
    need = args.count * args.length
    if tokens.size < need:
        raise SystemExit(f"{args.dataset}: the validation split holds {tokens.size} tokens, {need} needed")
    save_file({"input_ids": tokens[:need].reshape(args.count, args.length).copy()}, args.out)


def log_softmax(logits):
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def collect(args):
    ids = load_file(args.input)["input_ids"]
    targets = ids[:, 1:]
    cells = {}
    for spec in args.cell:
        name, paths = spec.split("=", 1)
        run, logits_path = paths.split(":", 1)
        target_set, precision, seed = name.split("/")
        logp = log_softmax(load_file(logits_path)["logits"][:, :-1])
        nll = -np.take_along_axis(logp, targets[..., None], axis=-1).mean()
        summary = json.load(open(os.path.join(run, "finetune.json")))
        cells[name] = {"target_set": target_set, "precision": precision, "seed": int(seed), "logp": logp,
                       "ppl": math.exp(nll),
                       "final_loss": summary.get("final_loss"),
                       "validation_ppl": summary["validation"]["perplexity"]}
    rows = []
    for name, c in cells.items():
        ref = cells.get(f"{c['target_set']}/fp32/{c['seed']}")
        if ref is None:
            raise SystemExit(f"no fp32 reference for {name}")
        p = np.exp(ref["logp"])
        kl = float((p * (ref["logp"] - c["logp"])).sum(axis=-1).mean())
        rows.append({"target_set": c["target_set"], "precision": c["precision"], "seed": c["seed"], "kl_to_fp32": kl,
                     "ppl": c["ppl"], "relative_ppl_change": abs(c["ppl"] - ref["ppl"]) / ref["ppl"],
                     "final_train_loss": c["final_loss"], "validation_ppl": c["validation_ppl"]})
    lyapunov = {}
    for spec in args.lyapunov or []:
        name, path = spec.split("=", 1)
        r = json.load(open(path))
        lyapunov[name] = {"all_negative": r["all_negative"], "max": max(l["max"] for l in r["layers"]),
                          "layers": len(r["layers"])}
    out = {"family": args.family, "windows": int(ids.shape[0]), "window_length": int(ids.shape[1]),
           "rows": rows, "lyapunov": lyapunov}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, args.out)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="verb", required=True)
    w = sub.add_parser("windows")
    w.add_argument("dataset")
    w.add_argument("out")
    w.add_argument("--count", type=int, default=8)
    w.add_argument("--length", type=int, default=128)
    c = sub.add_parser("collect")
    c.add_argument("out")
    c.add_argument("--family", required=True)
    c.add_argument("--input", required=True)
    c.add_argument("--cell", action="append", required=True)
    c.add_argument("--lyapunov", action="append")
    args = ap.parse_args()
    (windows if args.verb == "windows" else collect)(args)


if __name__ == "__main__":
    main()
