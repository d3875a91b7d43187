"""llama.cpp runs what `lowrank export --gguf` writes: greedy decoding of the exported f32 tiny Llama
(its q and k scaled up so that attention, and with it the RoPE layout, matters) from the same
prompt ids gives the same 64 tokens in llama.cpp (through llama-cpp-python over the
shared library scripts/setup-llamacpp --bindings builds) as `lowrank generate --greedy`, without and
with the exported LoRA applied (llama.cpp scale 1: alpha / r, as PEFT).

usage: llamacpp_greedy.py LOWRANK_BINARY FIXTURES_DIR WORK_DIR SETUP_LLAMACPP
Skipped (exit 77, with the reason) when llama-cpp-python or its library is not built; it is never
built here. LOWRANK_LLAMACPP_DIR overrides the directory scripts/setup-llamacpp --print names.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

lowrank, fixtures, work, setup = sys.argv[1:5]
cache = os.environ.get("LOWRANK_LLAMACPP_DIR") or subprocess.run(
    [setup, "--print"], capture_output=True, text=True).stdout.strip()
lib = pathlib.Path(cache) / "build-shared" / "bin"
if not (lib / "libllama.so").exists():
    print(f"SKIP: no llama.cpp shared library at {lib} (scripts/setup-llamacpp --bindings builds it)")
    sys.exit(77)
os.environ["LLAMA_CPP_LIB_PATH"] = str(lib)  # read when llama_cpp is imported
try:
    import numpy as np
    from llama_cpp import Llama
    from safetensors.numpy import load_file, save_file
except (ImportError, FileNotFoundError, RuntimeError, OSError) as e:
    print(f"SKIP: llama-cpp-python is not usable: {e}")
    sys.exit(77)

NEW_TOKENS = 64
SHARPEN = 6.0
PROMPT = [1, 17, 240, 33, 5, 99, 310, 7]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
model = os.path.join(work, "model")
shutil.copytree(os.path.join(fixtures, "hf/llama-tiny/model"), model)
shutil.copy(os.path.join(fixtures, "hf/bpe-gpt2style/tokenizer.json"), os.path.join(model, "tokenizer.json"))
# The fixture's attention is almost uniform (initialisation-sized q and k), which would let a wrong
# RoPE layout through unnoticed: sharpen it by scaling q and k.
weights = load_file(os.path.join(model, "model.safetensors"))
for name in weights:
    if name.endswith(("q_proj.weight", "k_proj.weight")):
        weights[name] = weights[name] * np.float32(SHARPEN)
save_file(weights, os.path.join(model, "model.safetensors"), metadata={"format": "pt"})
adapter = os.path.join(fixtures, "hf/llama-tiny/adapter-lora")
model_gguf, lora_gguf = os.path.join(work, "model.gguf"), os.path.join(work, "lora.gguf")
subprocess.run([lowrank, "-q", "export", "--gguf", "--model", model, "--out", model_gguf], check=True)
subprocess.run([lowrank, "-q", "export", "--gguf", "--model", model, "--adapter", adapter, "--out", lora_gguf],
               check=True)


def llama_cpp_greedy(lora):
    kwargs = {"lora_path": lora} if lora else {}
    llm = Llama(model_path=model_gguf, n_ctx=len(PROMPT) + NEW_TOKENS + 8, n_batch=len(PROMPT), n_threads=2,
                n_threads_batch=2, verbose=False, **kwargs)
    vocab = llm.n_vocab()
    out, margins = [], []
    llm.eval(PROMPT)
    for _ in range(NEW_TOKENS):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).copy()
        top2 = np.sort(logits)[-2:]
        margins.append(float(top2[1] - top2[0]))
        token = int(np.argmax(logits))
        out.append(token)
        llm.eval([token])
    return out, min(margins)


def lowrank_greedy(lora):
    cmd = [lowrank, "--json", "--threads", "2", "generate", "--model", model, "--prompt-ids",
           ",".join(map(str, PROMPT)), "--greedy", "--ignore-eos", "--max-new-tokens", str(NEW_TOKENS)]
    if lora:
        cmd += ["--adapter", adapter]
    gen = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["generations"][0]
    return gen["output_ids"]


failed = False
for lora in (None, lora_gguf):
    theirs, margin = llama_cpp_greedy(lora)
    ours = lowrank_greedy(lora)
    label = "with the LoRA" if lora else "base model"
    if ours != theirs:
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        print(f"FAIL {label}: first difference at token {first}\n  lowrank   {ours}\n  llama.cpp {theirs}")
        failed = True
    else:
        print(f"ok {label}: {NEW_TOKENS} greedy tokens equal (smallest top-2 logit margin {margin:.3g}): {ours}")
sys.exit(1 if failed else 0)
