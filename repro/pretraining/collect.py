"""One pretraining run of repro/pretraining/run, kept as a small result file.

  collect.py RUN_DIR METHOD RESULT_FILE ARGS...   pretrain.json + metrics.jsonl -> RESULT_FILE
  collect.py --best-lr METHOD_DIR SEED LR...      prints the grid's best learning rate at SEED

The result file holds what the tables need (validation perplexity and its interval, the memory
accounting, the final loss, the trainer's Adam and schedule, the method's options and the
command-line arguments that made it), so that table.py can rebuild every table from committed
files without the run directories.
"""
import json
import math
import os
import statistics
import sys


def best_lr(method_dir, seed, lrs):
    scored = []
    for lr in lrs:
        path = os.path.join(method_dir, f"lr{lr}_seed{seed}.json")
        if os.path.exists(path):
            ppl = json.load(open(path))["ppl"]  # null: the run diverged
            scored.append((math.inf if ppl is None else ppl, lr))
    if not scored:
        sys.exit(f"collect.py: no result for seed {seed} in {method_dir}")
    return min(scored)[1]


def collect(run_dir, method, result_file, args):
    summary = json.load(open(os.path.join(run_dir, "pretrain.json")))
    metrics = [json.loads(line) for line in open(os.path.join(run_dir, "run", "metrics.jsonl"))]
    trainer = summary["trainer"]
    result = {
        "method": method,
        "lr": trainer["lr"],
        "seed": trainer["seed"],
        "steps": summary["steps"],
        "ppl": summary["validation"]["perplexity"],
        "ci95": summary["validation"].get("ci95"),
        "validation_tokens": summary["validation"].get("tokens"),
        "final_loss": summary["final_loss"],
        "memory": summary["memory"],
        # Median over the steps after the first tenth (the first steps warm caches up).
        "tokens_per_s": statistics.median(m["tokens_per_s"] for m in metrics[len(metrics) // 10:]),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "train_seconds": summary["train_seconds"],
        "trainer": {k: trainer[k] for k in ("optimizer", "optimizer_options", "parameterization",
                                            "parameterization_options", "adam", "lr", "min_lr",
                                            "warmup_steps", "steps", "batch_size", "seq_len", "clip_norm")
                    if k in trainer},
        "args": args,
    }
    if trainer.get("optimizer") != "adamw":  # a low-rank optimizer takes its Adam from its options
        result["trainer"].pop("adam", None)
    for key in ("parameterization", "ranks"):  # what a method reports about itself (Maestro's ranks)
        if key in summary and not isinstance(summary[key], str):
            result["method_report"] = summary[key]
    os.makedirs(os.path.dirname(result_file), exist_ok=True)
    tmp = result_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, result_file)


if __name__ == "__main__":
    if sys.argv[1] == "--best-lr":
        print(best_lr(sys.argv[2], sys.argv[3], sys.argv[4:]))
    else:
        collect(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
