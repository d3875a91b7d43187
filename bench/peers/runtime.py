"""The runtime against PyTorch + transformers on one model and workload, ratios from one run.

Writes a random model of the `small` pretraining preset's shape (Llama, hidden 256, 6 layers,
8 heads, MLP 768, vocab 8192, tied embeddings; float32) with transformers, runs
build/bin/bench_runtime on that directory, then measures the same workload in transformers
(eager attention, SDPA, and SDPA under torch.compile with inductor) in this process, with the
same thread count:
  load        from_pretrained / Model::load: peak resident memory growth over the weight bytes
              (each in a fresh process)
  forward     batch 1 x 256 tokens, inference mode, all logits
  prefill_B   generate 1 token from B prompts of 128 tokens (B = 1, 8): prompt tokens/s
  decode_B    generate 1 + 32 tokens, greedy, no stop token: the 32 decode steps' tokens/s
  train_step  forward + backward + AdamW (every tensor), batch 8 x 256
The torch.compile column (skipped with --skip-compile) has forward, decode batch 1 and the training
step only, each compiled once and timed as the median after warm-up; the first call, compilation
included, is reported in a column of its own:
  forward     torch.compile(model) in inference mode
  decode_1    one decode step (1 token, transformers' StaticCache) compiled with fullgraph=True and
              torch._inductor.config.freezing = True; the prompt is prefilled eagerly; its greedy
              tokens are checked against eager decoding; graphs compiled after warm-up are counted
              (recompiles: none is allowed)
  train_step  torch.compile(model) + AdamW(fused=True)
"speedup" is the peer's time over lowrank's (above 1: lowrank is faster). The issue's targets
are checked against transformers eager: decode at batch 1 >= 2x, training step >= 1x, load
memory <= 1.3x the weights; and against torch.compile: training step >= 1x, decode >= 1x.

  .venv-peers/bin/python bench/peers/runtime.py [--threads N] [--repeats 5] [--skip-compile] [--json] [--note T]
  .venv-peers/bin/python bench/peers/runtime.py --table RESULTS.json   (markdown, from a --json output)
"""
import argparse
import atexit
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import timing  # bench/peers/timing.py

# A fresh inductor cache for this run, so that the compile-time column is a cold compile (the
# default cache under /tmp would serve the previous run's kernels).
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lowrank-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
import torch  # noqa: E402 (after the cache directory is set)
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--bench", default=str(pathlib.Path(os.environ.get("LOWRANK_BUILD_DIR", ROOT / "build"))
                                           / "bin" / "bench_runtime"))
parser.add_argument("--json", action="store_true")
parser.add_argument("--skip-compile", action="store_true", help="no torch.compile rows (a quick run)")
parser.add_argument("--note", default="", help="a note stored in the --json output (e.g. the machine's state)")
parser.add_argument("--table", metavar="RESULTS", help="print the markdown table of a --json output and exit")
parser.add_argument("--measure-load", help=argparse.SUPPRESS)  # child mode: one from_pretrained
args = parser.parse_args()


def markdown(results):
    """The docs' table of a --json output."""
    peers = [("eager", "eager"), ("sdpa", "SDPA"), ("compiled", "torch.compile")]
    lines = [f"*{results['note']}*", ""] if results.get("note") else []
    lines += [f"{results.get('cpu', 'CPU not recorded')}, {results['threads']} thread(s), torch {results['torch']}, "
             f"float32. Speedup: the peer's time over lowrank's (above 1: lowrank is faster).", "",
             "| case | lowrank | " + " | ".join(label for _, label in peers) + " | "
             + " | ".join(f"× {label}" for _, label in peers) + " | compile s |",
             "|---" * (3 + 2 * len(peers)) + "|"]
    for r in results["rows"]:
        fmt = ".4f" if r["unit"] == "s" else (".2f" if r["unit"] == "x" else ".0f")
        unit = {"s": " s", "x": "×", "tok/s": " tok/s"}[r["unit"]]

        def cell(key, f=fmt):
            return format(r[key], f) if key in r else "–"
        lines.append(f"| {r['case']} | {cell('lowrank')}{unit} | "
                     + " | ".join(cell(f"transformers_{k}") for k, _ in peers) + " | "
                     + " | ".join(cell(f"speedup_vs_{k}", ".2f") for k, _ in peers)
                     + f" | {cell('compile_seconds', '.1f')} |")
    c = results.get("compiled_decode")
    if c:
        lines += ["", f"Compiled decode: {c['decode_graphs']} graph(s) at warm-up, "
                  f"{c['decode_recompiles_after_warmup']} recompile(s) after it; greedy tokens equal to eager decoding: "
                  f"{c['decode_tokens_equal_to_eager']}/{c['decode_tokens']}."]
    lines += [""] + [f"- {name}: {'met' if ok else '**not met**'}" for name, ok in results["targets"].items()]
    return "\n".join(lines)


if args.table:
    path = pathlib.Path(args.table)
    if not path.exists():
        sys.exit(f"runtime.py: --table: {path} does not exist")
    print(markdown(json.loads(path.read_text())))
    sys.exit(0)
torch.set_num_threads(args.threads)
SEQ, PROMPT, NEW, TRAIN_BATCH = 256, 128, 32, 8


def current_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if args.measure_load:
    # As bench_runtime: warm the library up, then reset the peak so that it measures the load.
    torch.nn.functional.linear(torch.randn(64, 64), torch.randn(64, 64)).sum().item()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = current_rss()
    model = LlamaForCausalLM.from_pretrained(args.measure_load, dtype=torch.float32)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())  # tied: counted once
    peak = peak_rss()
    print(json.dumps({"weight_bytes": weights, "peak_rss_growth_over_weights": (peak - before) / weights}))
    sys.exit(0)


def median_seconds(fn):
    return timing.median_seconds(fn, args.repeats)


def measure_transformers(model_dir, attn):
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    model.generation_config.eos_token_id = None  # a random model must not stop early
    model.generation_config.pad_token_id = 0
    gen = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, SEQ), generator=gen)
    out = {}
    with torch.inference_mode():
        out["forward_seconds"] = median_seconds(lambda: model(ids))
        generation = {}
        for batch in (1, 8):
            prompts = torch.randint(0, vocab, (batch, PROMPT), generator=gen)
            mask = torch.ones_like(prompts)

            def run(n):
                model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                               do_sample=False)
            prefill = median_seconds(lambda: run(1))
            total = median_seconds(lambda: run(1 + NEW))
            generation[str(batch)] = {"prefill_tokens_per_second": batch * PROMPT / prefill,
                                      "decode_tokens_per_second": batch * NEW / (total - prefill)}
        out["generation"] = generation
    model.train()
    out["train_step_seconds"] = median_seconds(training_step(model, model, gen, fused=False))
    return out


def training_step(model, run_model, gen, fused):
    """A training step over a fixed batch: run_model (model or its compiled form) forward, backward,
    AdamW on every parameter of model."""
    vocab = model.config.vocab_size
    windows = torch.randint(0, vocab, (TRAIN_BATCH, SEQ + 1), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=fused)

    def step():
        opt.zero_grad()
        logits = run_model(windows[:, :-1]).logits
        torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), windows[:, 1:].reshape(-1)).backward()
        opt.step()
    return step


def compiled_graphs():
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def first_call_seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_compiled(model_dir):
    """torch.compile (inductor) on SDPA: forward, static-cache decode at batch 1, training step."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(1)
    out, compile_seconds = {}, {}
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    config, vocab = model.config, model.config.vocab_size
    ids = torch.randint(0, vocab, (1, SEQ), generator=gen)
    compiled = torch.compile(model)
    with torch.inference_mode():
        compile_seconds["forward_seconds"] = first_call_seconds(lambda: compiled(ids))
        out["forward_seconds"] = median_seconds(lambda: compiled(ids))

    # Decode: the prompt prefilled eagerly into a StaticCache, then NEW steps of one compiled graph.
    prompt = torch.randint(0, vocab, (1, PROMPT), generator=gen)
    with torch.no_grad():
        cache = StaticCache(config=config, max_cache_len=PROMPT + NEW + 1)

        def step(token, position):
            return model(input_ids=token, position_ids=position, cache=cache, use_cache=True).logits[:, -1].argmax(
                -1, keepdim=True)
        compiled_step = torch.compile(step, fullgraph=True)
        positions = [torch.tensor([[PROMPT + i]]) for i in range(NEW)]  # NEW steps after the prefill's token

        def decode(step_fn, timed):
            cache.reset()
            token = model(input_ids=prompt, cache=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
            tokens = [token]
            t0 = time.perf_counter()
            for i in range(NEW):
                tokens.append(step_fn(tokens[-1], positions[i]))
            timed.append(time.perf_counter() - t0)
            return torch.cat(tokens, dim=1)
        reference = decode(step, [])
        graphs_before = compiled_graphs()
        with torch._inductor.config.patch(freezing=True):
            compile_seconds["decode_1"] = first_call_seconds(lambda: decode(compiled_step, []))
        graphs_warm = compiled_graphs()
        times = []
        for _ in range(args.repeats):
            tokens = decode(compiled_step, times)
        out["decode_1_tokens_per_second"] = NEW / statistics.median(times)
        out["decode_graphs"] = graphs_warm - graphs_before
        out["decode_recompiles_after_warmup"] = compiled_graphs() - graphs_warm
        out["decode_tokens_equal_to_eager"] = int((tokens == reference).sum())
        out["decode_tokens"] = reference.shape[1]

    model.train()
    train_step = training_step(model, torch.compile(model), gen, fused=True)
    compile_seconds["train_step_seconds"] = first_call_seconds(train_step)
    out["train_step_seconds"] = median_seconds(train_step)
    out["compile_seconds"] = compile_seconds
    return out


def load_in_child(model_dir):
    result = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--measure-load", model_dir],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


with tempfile.TemporaryDirectory() as tmp:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024,
                         rms_norm_eps=1e-5, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(tmp)
    env = dict(os.environ, LOWRANK_NUM_THREADS=str(args.threads))
    lowrank = json.loads(subprocess.run(
        [args.bench, "--model", tmp, "--json", "--repeats", str(args.repeats), "--seq", str(SEQ),
         "--prompt-len", str(PROMPT), "--new-tokens", str(NEW), "--train-batch", str(TRAIN_BATCH)],
        check=True, capture_output=True, text=True, env=env).stdout)
    peers = {attn: measure_transformers(tmp, attn) for attn in ("eager", "sdpa")}
    compiled = None if args.skip_compile else measure_compiled(tmp)
    peer_load = load_in_child(tmp)

rows = []  # (case, lowrank value, unit, {peer: value}, higher_is_better, compile seconds or None)
rows.append(("load peak RSS / weights", lowrank["load"]["peak_rss_growth_over_weights"], "x",
             {"eager": peer_load["peak_rss_growth_over_weights"]}, False, None))
rows.append(("forward 1x256", lowrank["forward_seconds"], "s",
             {a: p["forward_seconds"] for a, p in peers.items()}, False, "forward_seconds"))
for batch in ("1", "8"):
    for key, label in (("prefill_tokens_per_second", "prefill"), ("decode_tokens_per_second", "decode")):
        rows.append((f"{label} batch {batch}", lowrank["generation"][batch][key], "tok/s",
                     {a: p["generation"][batch][key] for a, p in peers.items()}, True,
                     "decode_1" if (label, batch) == ("decode", "1") else None))
rows.append(("train step 8x256", lowrank["train_step_seconds"], "s",
             {a: p["train_step_seconds"] for a, p in peers.items()}, False, "train_step_seconds"))
if compiled:  # the compiled rows: the same keys as the eager peers' (decode_1: its own key)
    for case, value, unit, p, higher, key in rows:
        if key:
            p["compiled"] = compiled["decode_1_tokens_per_second" if key == "decode_1" else key]


def speedup(ours, theirs, higher_is_better):
    return ours / theirs if higher_is_better else theirs / ours


table = [{"case": c, "unit": u, "lowrank": v, **{f"transformers_{a}": pv for a, pv in p.items()},
          **{f"speedup_vs_{a}": speedup(v, pv, h) for a, pv in p.items()},
          **({"compile_seconds": compiled["compile_seconds"][k]} if compiled and k else {})}
         for c, v, u, p, h, k in rows]
case = {r["case"]: r for r in table}
targets = {
    "decode batch 1 >= 2x transformers eager": case["decode batch 1"]["speedup_vs_eager"] >= 2.0,
    "train step no slower than PyTorch eager": case["train step 8x256"]["speedup_vs_eager"] >= 1.0,
    "load peak memory <= 1.3x weight bytes": case["load peak RSS / weights"]["lowrank"] <= 1.3,
}
if compiled:
    targets["train step no slower than torch.compile (compile time not counted)"] = \
        case["train step 8x256"]["speedup_vs_compiled"] >= 1.0
    targets["decode batch 1 no slower than compiled static-cache decode"] = \
        case["decode batch 1"]["speedup_vs_compiled"] >= 1.0
    targets["compiled decode: no recompile after warm-up"] = compiled["decode_recompiles_after_warmup"] == 0
compile_info = None if not compiled else {
    k: compiled[k] for k in ("decode_graphs", "decode_recompiles_after_warmup", "decode_tokens_equal_to_eager",
                             "decode_tokens")}
if args.json:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name:")), None)
    print(json.dumps({"note": args.note, "cpu": cpu, "threads": args.threads, "torch": torch.__version__,
                      "lowrank_threads": lowrank["threads"],
                      "weight_bytes": lowrank["weight_bytes"], "rows": table, "compiled_decode": compile_info,
                      "targets": targets}, indent=2))
    sys.exit(0)
print(f"small-preset shape, float32, {args.threads} threads, torch {torch.__version__}; "
      f"weights {lowrank['weight_bytes'] / 2**20:.1f} MiB")
print(f"{'case':26} {'unit':6} {'lowrank':>10} {'hf eager':>10} {'hf sdpa':>10} {'compiled':>10} {'x eager':>8} "
      f"{'x sdpa':>8} {'x compil':>8} {'compile s':>9}")
for r in table:
    def cell(key, fmt):
        return format(r[key], fmt) if key in r else "-"
    fmt = ".4f" if r["unit"] == "s" else (".2f" if r["unit"] == "x" else ".0f")
    print(f"{r['case']:26} {r['unit']:6} {cell('lowrank', fmt):>10} {cell('transformers_eager', fmt):>10} "
          f"{cell('transformers_sdpa', fmt):>10} {cell('transformers_compiled', fmt):>10} "
          f"{cell('speedup_vs_eager', '.2f'):>8} {cell('speedup_vs_sdpa', '.2f'):>8} "
          f"{cell('speedup_vs_compiled', '.2f'):>8} {cell('compile_seconds', '.1f'):>9}")
if compile_info:
    print(f"compiled decode: {compile_info['decode_graphs']} graph(s) at warm-up, "
          f"{compile_info['decode_recompiles_after_warmup']} recompile(s) after it; greedy tokens equal to eager: "
          f"{compile_info['decode_tokens_equal_to_eager']}/{compile_info['decode_tokens']}")
for name, ok in targets.items():
    print(f"target {name}: {'met' if ok else 'NOT met'}")
