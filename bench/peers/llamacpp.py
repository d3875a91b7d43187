"""lowrank against llama.cpp at batch 1 on the CPU: decode and prefill speed, behind a correctness gate.

Needs the opt-in llama.cpp build (scripts/setup-llamacpp: llama-bench, llama-quantize, the gate
program bench/peers/llamacpp_gate.cpp, and the vendored convert_hf_to_gguf.py + gguf-py).

Models (--models): `small` and `galore-60m` (random weights of those pretraining presets' shapes,
written with transformers, seed 0, with the gpt2-style tokenizer of tests/fixtures), and
`quickstart` (the trained runs/quickstart/model, skipped when absent). Each is converted to GGUF
with the vendored convert_hf_to_gguf.py through a wrapper (the --convert-child mode below) that
sets the BPE pre-tokenizer name from the tokenizer's own pre_tokenizer definition (the script
recognises only vocabularies it has hashed, so it rejects our trained ones) and sends the Llama
vocabulary straight to the GPT-2 BPE path (it would import sentencepiece first). Then
llama-quantize builds F16, Q4_0, a matched Q4_0 (f32 token embedding and output, as lowrank's rtn
keeps lm_head in f32) and Q4_K_M (only when every weight row is a multiple of 256).

Rows (llama.cpp / lowrank): F32 / float32; F16 / bfloat16; Q4_0 matched, Q4_0 and
Q4_K_M / `lowrank compress --method rtn --bits 4` (group 64, lowrank's default, or 32 where 64
does not divide every input width: galore-60m).

Correctness gate, the same token ids into both engines (llama.cpp never tokenises):
  f32    trained model: greedy, --new-tokens new ids identical; random weights: teacher-forced
         argmax identical wherever lowrank's top-2 logit margin is above 1e-4
  16-bit, 4-bit  teacher-forced NLL on the quickstart validation split (random ids when it is
         absent) within 2% of each other (on random weights this is a weak check: both sit near
         log V; the argmax agreement is reported beside it)
A row's speeds are measured and printed only if its gate passed.

Speed, batch 1, threads --threads (1 and 2): `llama-bench -p 128 -n 32 -d 0,128 -r R -o json`
(prefill: pp128 on an empty cache; decode: tg32 after 128 tokens of context; its KV cache is f16,
as this llama-bench rejects -ctk/-ctv f32) against `bench_runtime --model DIR --decode-only
--threads N --json [--dtype bfloat16]` (prefill of one 128-token prompt, then 32 decode steps,
and its roofline). Both report medians of R repeats after a warm-up; --passes P alternates whole
passes over the engines and takes the median of the passes. Ratios are lowrank / llama.cpp
(above 1: lowrank is faster). With llama.cpp's Python bindings installed (scripts/setup-llamacpp
--bindings), every llama.cpp row is also timed through them (Llama.eval of the same prompt, then
greedy tokens with the argmax in Python), beside llama-bench. The run records the CPU (lscpu model
name and flags), the llama.cpp commit and build flags, and both engines' versions.

  scripts/setup-llamacpp [--bindings]
  .venv-peers/bin/python bench/peers/llamacpp.py --out bench/peers/results/llamacpp.json
        [--models small,galore-60m,quickstart] [--threads 1,2] [--repeats 5] [--passes 1]
        [--work DIR (keep the converted models)] [--note TEXT]
  .venv-peers/bin/python bench/peers/llamacpp.py --table bench/peers/results/llamacpp.json
        (the markdown tables of docs/benchmarks.md, from a results file)
"""
import argparse
import datetime
import importlib.util
import json
import math
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("LOWRANK_BUILD_DIR", ROOT / "build")) / "bin"
PRE_TOKENIZERS = {"gpt2": "gpt-2", "llama3": "llama-bpe", "qwen2": "qwen2"}
# The Split regexes of lowrank's llama3 and qwen2 presets (src/lowrank/data/bpe_trainer.cpp), which
# are those of the tokenizers llama.cpp calls llama-bpe and qwen2.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
# The random models: the shapes of the `small` and `galore-60m` presets (src/lowrank/train/pretrain.cpp).
SHAPES = {
    "small": dict(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                  num_attention_heads=8),
    "galore-60m": dict(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                       num_attention_heads=8),
}
MARGIN = 1e-4  # the f32 teacher-forced gate's top-2 margin
NLL_TOLERANCE = 0.02


def fail(message):
    # The running script's name: serve_llamacpp.py imports this module and its helpers.
    sys.exit(f"{pathlib.Path(sys.argv[0]).name}: {message}")


def run(cmd, env=None, what=None):
    """Runs cmd, returns its stdout; on failure exits with the command and the tail of its stderr."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        fail(f"{what or cmd[0]} failed (exit {result.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return result.stdout


def write_json_atomically(path, data):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp-" + str(os.getpid()))
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Child mode: convert_hf_to_gguf.py with the two workarounds, in a process of its own.

def convert_child(llama_dir, model_dir, outfile, pre):
    llama_dir = pathlib.Path(llama_dir)
    sys.path.insert(0, str(llama_dir))
    sys.path.insert(1, str(llama_dir / "gguf-py"))
    from conversion import base, llama  # the vendored converter's package

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    llama.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()
    import runpy
    sys.argv = ["convert_hf_to_gguf.py", str(model_dir), "--outfile", str(outfile), "--outtype", "f32"]
    runpy.run_path(str(llama_dir / "convert_hf_to_gguf.py"), run_name="__main__")


# ---------------------------------------------------------------------------------------------
# Model preparation.

def pre_tokenizer_name(tokenizer_json, flag):
    """llama.cpp's name for the tokenizer's pre-tokenizer: from --pre-tokenizer, else from the
    pre_tokenizer definition in tokenizer.json."""
    if flag:
        return PRE_TOKENIZERS[flag]
    spec = json.loads(pathlib.Path(tokenizer_json).read_text()).get("pre_tokenizer") or {}
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if not regexes and any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return "gpt-2"
    if regexes == [LLAMA3_REGEX]:
        return "llama-bpe"
    if regexes == [QWEN2_REGEX]:
        return "qwen2"
    fail(f"{tokenizer_json}: pre_tokenizer {json.dumps(spec)[:200]} is none of lowrank's presets; "
         f"pass --pre-tokenizer ({', '.join(PRE_TOKENIZERS)})")


def write_random_model(name, out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[name], num_key_value_heads=SHAPES[name]["num_attention_heads"],
                         max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    fixture = ROOT / "tests" / "fixtures" / "tokenizers" / "gpt2-trained" / "tokenizer.json"
    shutil.copy(fixture, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                           "eos_token": "<|endoftext|>"}))


def rtn_group_size(config):
    """lowrank's default group (64) where it divides every input width, else the largest power of two
    below it that does (galore-60m's MLP is 1376 = 43 x 32 wide)."""
    group = 64
    while group > 1 and any(config[k] % group for k in ("hidden_size", "intermediate_size")):
        group //= 2
    return group


def gguf_files(args, tools, model_dir, work, config):
    """Converts and quantises model_dir; returns {llama.cpp format: path or None (skipped)}."""
    llama_dir = tools["src"]
    f32 = work / "model-F32.gguf"
    if not f32.exists():
        pre = pre_tokenizer_name(model_dir / "tokenizer.json", args.pre_tokenizer)
        run([sys.executable, __file__, "--convert-child", llama_dir, model_dir, f32, pre], what="convert_hf_to_gguf.py")
    quantize = tools["bin"] / "llama-quantize"
    files = {"F32": f32}
    k_ok = all(config[k] % 256 == 0 for k in ("hidden_size", "intermediate_size"))
    for fmt, extra, qtype in (("F16", [], "F16"), ("Q4_0 matched", ["--output-tensor-type", "f32",
                              "--token-embedding-type", "f32"], "Q4_0"), ("Q4_0", [], "Q4_0"),
                              ("Q4_K_M", [], "Q4_K_M")):
        if fmt == "Q4_K_M" and not k_ok:
            files[fmt] = None
            continue
        out = work / f"model-{fmt.replace(' ', '-')}.gguf"
        if not out.exists():
            tmp = out.with_name(out.name + ".tmp")
            run([quantize, *extra, f32, tmp, qtype, "2"], what="llama-quantize")
            os.replace(tmp, out)
        files[fmt] = out
    return files


# ---------------------------------------------------------------------------------------------
# The gate.

def lowrank_logits(model_dir, ids, dtype, threads, tmp):
    import torch
    from safetensors.torch import load_file, save_file
    inp, out = tmp / "ids.safetensors", tmp / "logits.safetensors"
    save_file({"input_ids": torch.as_tensor(ids, dtype=torch.int64)}, str(inp))
    run([BUILD / "lowrank", "logits", "--model", model_dir, "--input", inp, "--out", out, "--dtype", dtype,
         "--threads", threads], what="lowrank logits")
    return load_file(str(out))["logits"].float()


def llama_logits(tools, gguf, ids, threads, tmp):
    import numpy as np
    import torch
    rows, seq = ids.shape
    inp, out = tmp / "ids.bin", tmp / "logits.bin"
    np.asarray(ids, dtype=np.int32).tofile(inp)
    run([tools["bin"] / "lowrank-llama-gate", gguf, "logits", inp, seq, threads, out], what="lowrank-llama-gate")
    flat = torch.from_numpy(np.fromfile(out, dtype=np.float32))
    return flat.view(rows, seq, -1)


def nll(logits, ids):
    import torch
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    return -logp.gather(-1, torch.as_tensor(ids[:, 1:], dtype=torch.int64).unsqueeze(-1)).mean().item()


def argmax_check(ours, theirs):
    """Positions where lowrank's top-2 margin is above MARGIN, and how many argmaxes agree there."""
    top2 = ours.topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) > MARGIN
    same = ours.argmax(-1) == theirs.argmax(-1)
    return int(decided.sum()), int((same & decided).sum()), float(same.float().mean())


def greedy_check(tools, model_dir, gguf, prompt, new_tokens, tmp):
    import numpy as np
    np.asarray(prompt, dtype=np.int32).tofile(tmp / "prompt.bin")
    theirs = [int(x) for x in run([tools["bin"] / "lowrank-llama-gate", gguf, "greedy", tmp / "prompt.bin",
                                   new_tokens, 1], what="lowrank-llama-gate").strip().split(",")]
    out = json.loads(run([BUILD / "lowrank", "generate", "--model", model_dir, "--prompt-ids",
                          ",".join(map(str, prompt)), "--max-new-tokens", new_tokens, "--ignore-eos", "--json",
                          "--threads", 1], what="lowrank generate"))
    ours = out["generations"][0]["output_ids"]
    same = sum(a == b for a, b in zip(ours, theirs))
    return {"kind": "greedy", "new_tokens": new_tokens, "identical_tokens": same,
            "first_difference": next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None),
            "passed": ours == theirs}


def gate(args, tools, model, model_dir, lowrank_fmt, gguf, fmt, ids, tmp):
    dtype = "bfloat16" if lowrank_fmt == "bf16" else "float32"
    ours = lowrank_logits(model_dir, ids, dtype, 1, tmp)
    theirs = llama_logits(tools, gguf, ids, 1, tmp)
    if ours.shape != theirs.shape:
        fail(f"{model}: logits of shape {tuple(ours.shape)} (lowrank) against {tuple(theirs.shape)} ({gguf})")
    decided, agree, agreement = argmax_check(ours, theirs)
    result = {"tokens": int(ids.size), "argmax_agreement": agreement, "decided_positions": decided,
              "decided_agreeing": agree, "max_abs_logit_difference": float((ours - theirs).abs().max())}
    if fmt == "F32":
        if model == "quickstart":
            prompt = [int(x) for x in ids[0, :args.prompt_len]]
            result.update(greedy_check(tools, model_dir, gguf, prompt, args.new_tokens, tmp))
        else:
            result.update(kind=f"teacher-forced argmax where the margin > {MARGIN}", passed=agree == decided)
    else:
        ours_nll, theirs_nll = nll(ours, ids), nll(theirs, ids)
        rel = abs(ours_nll - theirs_nll) / theirs_nll
        result.update(kind=f"teacher-forced NLL within {NLL_TOLERANCE:.0%}", nll_lowrank=ours_nll,
                      nll_llamacpp=theirs_nll, nll_relative_difference=rel, passed=rel <= NLL_TOLERANCE)
    return result


def gate_ids(args, vocab, seq):
    """Rows of seq validation ids of the quickstart dataset (random ids when it is absent)."""
    import numpy as np
    validation = pathlib.Path(args.quickstart) / ".." / "dataset" / "validation.bin"
    rows = args.gate_rows
    if validation.exists():
        tokens = np.fromfile(validation, dtype=np.uint16).astype(np.int64)
        if tokens.size >= rows * seq and tokens.max() < vocab:
            return tokens[:rows * seq].reshape(rows, seq), "quickstart validation split"
    return np.random.default_rng(0).integers(0, vocab, size=(rows, seq)), "random ids (seed 0)"


# ---------------------------------------------------------------------------------------------
# Speed.

def llama_bench(args, tools, gguf):
    # The KV cache stays llama-bench's default f16 for every format: at this commit its -ctk/-ctv
    # accept no f32 (f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl). The gate runs with f32.
    cmd = [tools["bin"] / "llama-bench", "-m", gguf, "-p", args.prompt_len, "-n", args.new_tokens,
           "-d", f"0,{args.prompt_len}", "-t", ",".join(map(str, args.threads)), "-r", args.repeats, "-o", "json"]
    entries = json.loads(run(cmd, what="llama-bench"))
    out, info = {}, {}
    for e in entries:  # what llama-bench reports of itself, the machine and the model
        info = {k: e.get(k) for k in ("build_commit", "build_number", "cpu_info", "backends", "type_k", "type_v",
                                      "model_type", "model_size", "flash_attn")}
        t = str(e["n_threads"])
        speed = statistics.median(e["samples_ts"]) if e.get("samples_ts") else e["avg_ts"]
        if e["n_prompt"] > 0 and e["n_gen"] == 0 and e["n_depth"] == 0:
            out.setdefault(t, {})["prefill_tokens_per_second"] = speed
        elif e["n_gen"] > 0 and e["n_depth"] == args.prompt_len:
            out.setdefault(t, {})["decode_tokens_per_second"] = speed
        elif e["n_gen"] > 0 and e["n_depth"] == 0:
            out.setdefault(t, {})["decode_at_depth_0_tokens_per_second"] = speed
    return out, info


# llama.cpp's own Python bindings (llama-cpp-python over the shared library that
# `scripts/setup-llamacpp --bindings` builds): the same prompt, then greedy decoding with the argmax
# taken in Python, as a user of the bindings would write it. Their speed beside llama-bench's is
# the per-token cost of the Python layer. Run in a child process: the library is found through
# LLAMA_CPP_LIB_PATH, which must be set before llama_cpp is imported.
BINDINGS_CHILD = r"""
import json, statistics, sys, time
import numpy as np
from llama_cpp import Llama
gguf, threads, prompt_len, new_tokens, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ids = json.loads(sys.argv[6])[:prompt_len]
llm = Llama(model_path=gguf, n_ctx=prompt_len + new_tokens + 8, n_batch=prompt_len, n_threads=threads,
            n_threads_batch=threads, verbose=False)
vocab = llm.n_vocab()


def next_token():  # greedy over the last position's logits (0.3.36 keeps no scores without logits_all)
    return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))))


prefill, decode = [], []
for r in range(repeats + 1):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    token = next_token()
    for _ in range(new_tokens):
        llm.eval([token])
        token = next_token()
    t2 = time.perf_counter()
    if r:  # the first run warms up
        prefill.append(len(ids) / (t1 - t0))
        decode.append(new_tokens / (t2 - t1))
print(json.dumps({"bindings_prefill_tokens_per_second": statistics.median(prefill),
                  "bindings_decode_tokens_per_second": statistics.median(decode)}))
"""


def bindings_speeds(args, tools, gguf, ids):
    """{threads: speeds} through the Python bindings, or None when they are not installed."""
    lib = tools.get("bindings_lib")
    if lib is None:
        return None
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(lib),
               LD_LIBRARY_PATH=f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    out = {}
    for t in args.threads:
        cmd = [sys.executable, "-c", BINDINGS_CHILD, gguf, t, args.prompt_len, args.new_tokens, args.repeats,
               json.dumps([int(i) for i in ids[0].tolist()])]
        out[str(t)] = json.loads(run(cmd, env=env, what="llama-cpp-python").strip().splitlines()[-1])
    return out


def bench_runtime(args, model_dir, fmt, threads):
    cmd = [BUILD / "bench_runtime", "--model", model_dir, "--decode-only", "--threads", threads, "--json",
           "--repeats", args.repeats, "--prompt-len", args.prompt_len, "--new-tokens", args.new_tokens]
    if fmt == "bf16":
        cmd += ["--dtype", "bfloat16"]
    env = dict(os.environ, LOWRANK_NUM_THREADS=str(threads))
    out = json.loads(run(cmd, env=env, what="bench_runtime"))
    gen = out["generation"]["1"]
    result = {k: gen[k] for k in ("prefill_tokens_per_second", "decode_tokens_per_second")}
    if "roofline" in out:
        result["roofline"] = out["roofline"]
    return result


def median_of_passes(passes):
    """Per thread count and key, the median over passes (nested dicts of numbers)."""
    if len(passes) == 1:
        return passes[0]
    merged = {}
    for t in passes[0]:
        merged[t] = {}
        for k, v in passes[0][t].items():
            values = [p[t][k] for p in passes if k in p.get(t, {})]
            merged[t][k] = statistics.median(values) if isinstance(v, (int, float)) else v
    return merged


# ---------------------------------------------------------------------------------------------
# Machine and versions.

def machine_info(tools):
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    import torch
    import transformers
    version = run([BUILD / "lowrank", "--version"], what="lowrank --version").strip().splitlines()[0]
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    if commit:
        version += f" (source tree {commit})"
    return {"cpu": fields.get("Model name"), "cpus": fields.get("CPU(s)"),
            "flags": sorted(set(fields.get("Flags", "").split())),
            "kernel": platform.release(), "lowrank": version, "peer_torch": torch.__version__,
            "peer_transformers": transformers.__version__, "llama_cpp_build": tools["build"]}


def find_tools(args):
    cache = pathlib.Path(args.llamacpp) if args.llamacpp else pathlib.Path(
        run([ROOT / "scripts" / "setup-llamacpp", "--print"]).strip())
    build_json = cache / "build.json"
    if not build_json.exists():
        fail(f"{build_json} is missing: run scripts/setup-llamacpp first (it builds llama.cpp into {cache})")
    tools = {"bin": cache / "build" / "bin", "src": cache / "src" / "vendor" / "llama.cpp",
             "build": json.loads(build_json.read_text())}
    for name in ("llama-bench", "llama-quantize", "lowrank-llama-gate"):
        if not (tools["bin"] / name).exists():
            fail(f"{tools['bin'] / name} is missing: run scripts/setup-llamacpp")
    for name in ("lowrank", "bench_runtime"):
        if not (BUILD / name).exists():
            fail(f"{BUILD / name} is missing: build lowrank first (scripts/build), or set LOWRANK_BUILD_DIR")
    # The Python bindings are optional (scripts/setup-llamacpp --bindings): without them only
    # llama-bench's timings are reported.
    shared = cache / "build-shared" / "bin"
    if (shared / "libllama.so").exists() and importlib.util.find_spec("llama_cpp") is not None:
        tools["bindings_lib"] = shared
    else:
        print("llama-cpp-python or its shared library is not installed (scripts/setup-llamacpp --bindings): "
              "reporting llama-bench's timings only", flush=True)
    return tools


# ---------------------------------------------------------------------------------------------
# The run.

PAIRS = [("F32", "f32"), ("F16", "bf16"), ("Q4_0 matched", "rtn4"), ("Q4_0", "rtn4"), ("Q4_K_M", "rtn4")]
LOWRANK_LABELS = {"f32": "float32", "bf16": "bfloat16", "rtn4": "rtn 4-bit"}


def measure(args):
    tools = find_tools(args)
    work_root = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="lowrank-llamacpp-"))
    results = {"note": args.note, "date": datetime.date.today().isoformat(),
               "settings": {"threads": args.threads, "repeats": args.repeats, "passes": args.passes,
                            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                            "gate_rows": args.gate_rows, "rtn_group_size": args.rtn_group_size},
               "machine": machine_info(tools), "models": {}}
    try:
        for model in args.models:
            work = work_root / model
            work.mkdir(parents=True, exist_ok=True)
            if model == "quickstart":
                model_dir = pathlib.Path(args.quickstart)
                if not (model_dir / "config.json").exists():
                    print(f"skipping quickstart: {model_dir} has no config.json (run scripts/quickstart)")
                    continue
            elif model in SHAPES:
                model_dir = work / "hf"
                if not (model_dir / "config.json").exists():
                    write_random_model(model, model_dir)
            else:
                fail(f"--models: unknown model {model} (small, galore-60m, quickstart)")
            config = json.loads((model_dir / "config.json").read_text())
            print(f"{model}: converting and quantising", flush=True)
            ggufs = gguf_files(args, tools, model_dir, work, config)
            group = args.rtn_group_size or rtn_group_size(config)
            rtn_dir = work / f"rtn4-g{group}"
            if not (rtn_dir / "config.json").exists():
                shutil.rmtree(rtn_dir, ignore_errors=True)
                run([BUILD / "lowrank", "compress", "--model", model_dir, "--method", "rtn", "--bits", 4,
                     "--group-size", group, "--out", rtn_dir], what="lowrank compress")
            lowrank_dirs = {"f32": model_dir, "bf16": model_dir, "rtn4": rtn_dir}
            seq = args.prompt_len
            ids, ids_source = gate_ids(args, config["vocab_size"], seq)
            entry = {"config": {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                       "num_attention_heads", "vocab_size")},
                     "gate_ids": ids_source, "rtn_group_size": group,
                     "gguf_bytes": {f: p.stat().st_size for f, p in ggufs.items() if p},
                     "rows": []}
            with tempfile.TemporaryDirectory() as tmp:
                for fmt, ours in PAIRS:
                    if ggufs[fmt] is None:
                        entry["rows"].append({"llamacpp": fmt, "lowrank": ours,
                                              "skipped": "rows are not multiples of 256 (Q4_K)"})
                        continue
                    print(f"{model}: gate {fmt} / {LOWRANK_LABELS[ours]}", flush=True)
                    entry["rows"].append({"llamacpp": fmt, "lowrank": ours,
                                          "gate": gate(args, tools, model, lowrank_dirs[ours], ours, ggufs[fmt],
                                                       fmt, ids, pathlib.Path(tmp))})
            lowrank_passes = {f: [] for f in lowrank_dirs}
            llama_passes = {r["llamacpp"]: [] for r in entry["rows"] if r.get("gate", {}).get("passed")}
            entry["llama_bench"] = {}
            for p in range(args.passes):
                for ours in lowrank_dirs:
                    if not any(r["lowrank"] == ours and r["llamacpp"] in llama_passes for r in entry["rows"]):
                        continue
                    print(f"{model}: pass {p + 1}: lowrank {LOWRANK_LABELS[ours]}", flush=True)
                    lowrank_passes[ours].append({str(t): bench_runtime(args, lowrank_dirs[ours], ours, t)
                                                 for t in args.threads})
                for fmt in llama_passes:
                    print(f"{model}: pass {p + 1}: llama.cpp {fmt}", flush=True)
                    speeds, entry["llama_bench"][fmt] = llama_bench(args, tools, ggufs[fmt])
                    bindings = bindings_speeds(args, tools, ggufs[fmt], ids)
                    for t, b in (bindings or {}).items():
                        speeds.setdefault(t, {}).update(b)
                    llama_passes[fmt].append(speeds)
            for row in entry["rows"]:
                if row["llamacpp"] not in llama_passes:
                    continue
                ours = median_of_passes(lowrank_passes[row["lowrank"]])
                theirs = median_of_passes(llama_passes[row["llamacpp"]])
                row["speed"] = {}
                for t in map(str, args.threads):
                    s = {"lowrank": ours[t], "llamacpp": theirs[t]}
                    for k in ("prefill_tokens_per_second", "decode_tokens_per_second"):
                        # A speed that is not positive is a timing that went wrong (bench_runtime's decode
                        # is (total - prefill) of two medians: noise can make it negative): no ratio.
                        valid = ours[t][k] > 0 and theirs[t][k] > 0
                        s[k.split("_")[0] + "_ratio"] = ours[t][k] / theirs[t][k] if valid else None
                    row["speed"][t] = s
            results["models"][model] = entry
            if args.out:
                write_json_atomically(args.out, results)
    finally:
        if not args.work:
            shutil.rmtree(work_root, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------------------------
# Tables.

def fmt_num(x, digits=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if x > 0 else f"invalid ({x:.{digits}f})"


def gate_cell(g):
    if g["kind"] == "greedy":
        verdict = f"greedy {g['identical_tokens']}/{g['new_tokens']}"
    elif "nll_lowrank" in g:
        verdict = f"NLL {g['nll_lowrank']:.3f} / {g['nll_llamacpp']:.3f} ({g['nll_relative_difference']:.1%})"
    else:
        verdict = f"argmax {g['decided_agreeing']}/{g['decided_positions']}"
    return f"{verdict}: {'passed' if g['passed'] else '**failed**'}"


def targets(results):
    """The issue's targets, each met or missed, with the ratios behind it."""
    threads = [str(t) for t in results["settings"]["threads"]]
    rows = [(model, row) for model, entry in results["models"].items() for row in entry["rows"] if "speed" in row]

    def check(name, pairs, need, key):
        values = [(row["speed"][t][key], f"{model} {t}t") for model, row in rows
                  if (row["llamacpp"], row["lowrank"]) in pairs for t in threads]
        values = [(v, where) for v, where in values if v is not None]
        if not values:
            return f"{name}: not measured"
        worst = sorted(values)[:3]
        verdict = "reported" if need is None else "met" if worst[0][0] >= need else "**missed**"
        return f"{name}: {verdict} (lowest {', '.join(f'{v:.2f}× {w}' for v, w in worst)})"
    out = [check("decode, float32 vs F32 ≥ 1.0×", {("F32", "f32")}, 1.0, "decode_ratio"),
           check("decode, rtn INT4 vs matched Q4_0 ≥ 0.8×", {("Q4_0 matched", "rtn4")}, 0.8, "decode_ratio"),
           check("decode, rtn INT4 vs default Q4_0", {("Q4_0", "rtn4")}, None, "decode_ratio"),
           check("decode, bfloat16 vs F16 ≥ 0.8×", {("F16", "bf16")}, 0.8, "decode_ratio"),
           check("prefill, float32 vs F32 ≥ 1.0×", {("F32", "f32")}, 1.0, "prefill_ratio"),
           check("prefill, rtn INT4 vs matched Q4_0", {("Q4_0 matched", "rtn4")}, None, "prefill_ratio")]
    galore = [(row["speed"][t]["lowrank"].get("roofline") or {}).get("decode_percent_of_bandwidth")
              for model, row in rows if model == "galore-60m" and row["lowrank"] == "f32" for t in threads]
    galore = [g for g in galore if g is not None]
    out.append("float32 decode on galore-60m ≥ 60% of the measured read bandwidth: "
               + ("not measured" if not galore else ("met" if min(galore) >= 60 else "**missed**")
                  + " (" + " / ".join(f"{g:.0f}%" for g in galore) + f" at {' / '.join(threads)} threads)"))
    if len(threads) > 1:
        scaling = {}
        for model, row in rows:
            sp = row["speed"]
            one, two = sp[threads[0]]["lowrank"]["decode_tokens_per_second"], sp[threads[-1]]["lowrank"][
                "decode_tokens_per_second"]
            if one > 0 and two > 0:
                scaling[f"{model} {LOWRANK_LABELS[row['lowrank']]}"] = two / one
        worst = sorted((v, k) for k, v in scaling.items())[:3]
        out.append(f"lowrank decode, {threads[-1]} threads vs {threads[0]} ≥ 1.3× (every model and format): "
                   + ("not measured" if not worst else ("met" if worst[0][0] >= 1.3 else "**missed**")
                      + f" (lowest {', '.join(f'{v:.2f}× {k}' for v, k in worst)})"))
    return out


def markdown(results):
    m = results["machine"]
    s = results["settings"]
    b = m["llama_cpp_build"]
    lines = []
    if results.get("note"):
        lines += [f"*{results['note']}*", ""]
    lines += [f"Machine: {m['cpu']} ({m['cpus']} CPUs), {results['date']}; {m['lowrank']}, torch "
              f"{m['peer_torch']} (conversion); llama.cpp {b['llama_cpp_commit']} "
              f"(llama-cpp-python {b['llama_cpp_python']} sdist; "
              f"{' '.join(f for f in b['cmake_flags'] if 'NATIVE' in f or 'BUILD_TYPE' in f or 'SHARED' in f)}, "
              f"AMX {b.get('amx', 'unknown')}; {b['compiler']}). Batch 1, prompt {s['prompt_len']}, "
              f"{s['new_tokens']} new tokens, "
              f"medians of {s['repeats']} repeats" + (f" and of {s['passes']} passes" if s["passes"] > 1 else "")
              + ". Ratio: lowrank / llama.cpp (above 1: lowrank is faster).", ""]
    threads = [str(t) for t in s["threads"]]
    tslash = " / ".join(threads)
    lines += [f"| model | llama.cpp / lowrank | gate | threads | decode tok/s llama.cpp | lowrank | ratio "
              f"| prefill tok/s llama.cpp | lowrank | ratio | lowrank decode: MB/token, GB/s (% of measured read "
              f"bandwidth) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, entry in results["models"].items():
        c = entry["config"]
        label = f"{model} (h{c['hidden_size']}, {c['num_hidden_layers']} L, V {c['vocab_size']})"
        for row in entry["rows"]:
            pair = f"{row['llamacpp']} / {LOWRANK_LABELS[row['lowrank']]}"
            if row["lowrank"] == "rtn4" and "rtn_group_size" in entry:
                pair += f", group {entry['rtn_group_size']}"
            if "skipped" in row:
                lines.append(f"| {label} | {pair} | skipped: {row['skipped']} | | | | | | | | |")
                continue
            gate = gate_cell(row["gate"])
            if "speed" not in row:
                lines.append(f"| {label} | {pair} | {gate} | {tslash} | not measured | | | | | | |")
                continue
            sp = row["speed"]

            def col(engine, key, digits=0):
                return " / ".join(fmt_num(sp[t][engine].get(key), digits) for t in threads)

            def ratio(key):
                return " / ".join(fmt_num(sp[t][key], 2) for t in threads)
            roofs = [sp[t]["lowrank"].get("roofline") or {} for t in threads]
            roof = "–"
            if all(roofs):
                roof = (f"{roofs[0]['decode_bytes_per_token'] / 1e6:.1f}: " +
                        " / ".join(f"{r['decode_gbs']:.1f} ({r['decode_percent_of_bandwidth']:.0f}%)" for r in roofs))
            lines.append(f"| {label} | {pair} | {gate} | {tslash} | {col('llamacpp', 'decode_tokens_per_second')} "
                         f"| {col('lowrank', 'decode_tokens_per_second')} | {ratio('decode_ratio')} "
                         f"| {col('llamacpp', 'prefill_tokens_per_second')} "
                         f"| {col('lowrank', 'prefill_tokens_per_second')} | {ratio('prefill_ratio')} | {roof} |")
    bindings = [(model, row) for model, entry in results["models"].items() for row in entry["rows"]
                if "speed" in row and all("bindings_decode_tokens_per_second" in row["speed"][t]["llamacpp"]
                                          for t in threads)]
    if bindings:
        lines += ["", "llama.cpp through its Python bindings (llama-cpp-python, greedy argmax in Python) against "
                  "llama-bench, same GGUF, threads " + tslash + ":", "",
                  "| model | llama.cpp | decode tok/s llama-bench | bindings | bindings ÷ llama-bench "
                  "| prefill tok/s llama-bench | bindings |", "|---|---|---|---|---|---|---|"]
        for model, row in bindings:
            sp = row["speed"]
            b = " / ".join(fmt_num(sp[t]["llamacpp"]["bindings_decode_tokens_per_second"]) for t in threads)
            d = " / ".join(fmt_num(sp[t]["llamacpp"]["decode_tokens_per_second"]) for t in threads)
            r = " / ".join(fmt_num(sp[t]["llamacpp"]["bindings_decode_tokens_per_second"]
                                   / sp[t]["llamacpp"]["decode_tokens_per_second"], 2) for t in threads)
            pb = " / ".join(fmt_num(sp[t]["llamacpp"]["bindings_prefill_tokens_per_second"]) for t in threads)
            pd = " / ".join(fmt_num(sp[t]["llamacpp"]["prefill_tokens_per_second"]) for t in threads)
            lines.append(f"| {model} | {row['llamacpp']} | {d} | {b} | {r} | {pd} | {pb} |")
    lines += ["", "Issue 26's targets, over every model and thread count measured (worst case first):"]
    lines += [f"- {t}" for t in targets(results)]
    flags = [f for f in m["flags"] if f.startswith(("avx", "fma", "f16c", "amx"))]
    lines += ["", f"CPU flags (SIMD): {' '.join(flags)}."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="small,galore-60m,quickstart")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gate-rows", type=int, default=8, help="gate windows of --prompt-len tokens")
    parser.add_argument("--rtn-group-size", type=int, default=0,
                        help="rtn's --group-size (default: 64, or the largest power of two below it that divides "
                             "every input width)")
    parser.add_argument("--pre-tokenizer", choices=sorted(PRE_TOKENIZERS),
                        help="lowrank's pre-tokenizer preset of the models (default: read from tokenizer.json)")
    parser.add_argument("--quickstart", default=str(ROOT / "runs" / "quickstart" / "model"))
    parser.add_argument("--llamacpp", help="the scripts/setup-llamacpp directory (default: its own default)")
    parser.add_argument("--work", help="keep the converted models here (default: a temporary directory)")
    parser.add_argument("--out", help="results JSON file (written after every model)")
    parser.add_argument("--note", default="", help="a note stored in the results (e.g. the machine's state)")
    parser.add_argument("--table", metavar="RESULTS", help="print the markdown table of a results file and exit")
    parser.add_argument("--convert-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.convert_child:
        convert_child(*args.convert_child)
        return
    if args.table:
        path = pathlib.Path(args.table)
        if not path.exists():
            fail(f"--table: {path} does not exist")
        print(markdown(json.loads(path.read_text())))
        return
    args.models = [m for m in args.models.split(",") if m]
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        fail(f"--threads: {args.threads} is not a comma-separated list of integers")
    if args.repeats < 1 or args.passes < 1 or args.gate_rows < 1:
        fail("--repeats, --passes and --gate-rows must be at least 1")
    results = measure(args)
    print(markdown(results))
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
