"""Cross-check of `lowrank export --gguf` against llama.cpp's own Python package (gguf-py, PyPI
`gguf`, pinned in the peer stack) on tiny models.

For a Llama with a GPT-2-style tokenizer (f32, f16, bf16), a Llama with a Llama-3-style tokenizer
and whole 32-element blocks (q8_0, q4_0) and a tied Qwen2 with a Qwen2-style tokenizer (f32, q8_0),
and for the bundled PEFT LoRA (f32, f16):
- gguf.GGUFReader reads the file, and every key, value, tensor name, type and shape it sees equals
  what `lowrank inspect --json` (lowrank's own reader) lists;
- every tensor's bytes equal gguf.quants.quantize, in the converter's type, of the HF tensor moved
  to its llama.cpp name by gguf's own TensorNameMap and permuted as convert_hf_to_gguf.py's
  LlamaModel.permute (copied below; for a LoRA, lora_B only, as convert_lora_to_gguf.py's
  LoraTorchTensor does);
- the vocabulary is tokenizer.json's, id for id.

usage: gguf_interop.py LOWRANK_BINARY FIXTURES_DIR WORK_DIR   (exit 77: the peer stack is absent)
"""
import json
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    import torch
    import gguf
    from safetensors.numpy import load_file
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

lowrank, fixtures, work = sys.argv[1:4]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)
        print("FAIL:", message)


# convert_hf_to_gguf.py, conversion/llama.py: LlamaModel.permute (numpy arrays here).
def permute(weights, n_head, n_head_kv):
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def make_model(name, cls, config_cls, tokenizer, **config):
    torch.manual_seed(29)
    model = cls(config_cls(**config)).eval()
    with torch.no_grad():  # larger than the init so that quantisation steps are visible
        for p in model.parameters():
            p.mul_(5)
    d = os.path.join(work, name)
    model.save_pretrained(d)
    shutil.copy(tokenizer, os.path.join(d, "tokenizer.json"))
    return d


def inspect(path):
    out = subprocess.run([lowrank, "--json", "inspect", path], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def field_value(field):
    v = field.contents()
    return v


def same_value(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return float(np.float32(a)) == float(np.float32(b)) or a == b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def compare_metadata(path, reader):
    ours = inspect(path)
    theirs = [(k, f) for k, f in reader.fields.items() if not k.startswith("GGUF.")]
    check([k for k, _ in theirs] == list(ours["metadata"].keys()), f"{path}: keys differ")
    for k, f in theirs:
        check(same_value(field_value(f), ours["metadata"].get(k)), f"{path}: key {k}: gguf {str(field_value(f))[:80]}"
              f" vs lowrank {str(ours['metadata'].get(k))[:80]}")
    check(len(reader.tensors) == len(ours["tensors"]), f"{path}: tensor count")
    for t, o in zip(reader.tensors, ours["tensors"]):
        check(t.name == o["name"] and t.tensor_type.name == o["dtype"] and
              [int(x) for x in t.shape][::-1] == o["shape"], f"{path}: tensor {t.name} vs {o['name']}")
    return ours


def expected_bytes(array, qtype):
    return np.ascontiguousarray(gguf.quants.quantize(array.astype(np.float32), qtype)).tobytes()


def check_model(model_dir, arch, qtype_name, pre):
    before = len(failures)
    out = os.path.join(work, f"{os.path.basename(model_dir)}-{qtype_name}.gguf")
    subprocess.run([lowrank, "-q", "export", "--gguf", "--type", qtype_name, "--model", model_dir, "--out", out],
                   check=True)
    reader = gguf.GGUFReader(out)
    compare_metadata(out, reader)
    config = json.load(open(os.path.join(model_dir, "config.json")))
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    qtype = gguf.GGMLQuantizationType[qtype_name.upper()]
    tensors = {t.name: t for t in reader.tensors}
    hf = load_file(os.path.join(model_dir, "model.safetensors"))
    model_arch = gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2
    names = gguf.get_tensor_name_map(model_arch, config["num_hidden_layers"])
    seen = set()
    for name, w in hf.items():
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        check(new is not None, f"{name}: no llama.cpp name")
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = permute(w, n_head, n_head)
        if arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = permute(w, n_head, n_kv)
        t = tensors.get(new)
        check(t is not None, f"{out}: no tensor {new}")
        if t is None:
            continue
        seen.add(new)
        want_type = gguf.GGMLQuantizationType.F32 if (w.ndim <= 1 or new.endswith("_norm.weight") or
                                                      not new.endswith(".weight")) else qtype
        check(t.tensor_type == want_type, f"{out}: {new} is {t.tensor_type.name}, expected {want_type.name}")
        check(np.ascontiguousarray(t.data).tobytes() == expected_bytes(w, want_type),
              f"{out}: {new} bytes differ from gguf.quants.quantize")
    check(seen == set(tensors), f"{out}: extra tensors {set(tensors) - seen}")
    check(("output.weight" in tensors) == (not config.get("tie_word_embeddings", False)), f"{out}: output.weight")
    # The vocabulary, id for id, and the pre-tokenizer.
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    by_id = {i: s for s, i in tok["model"]["vocab"].items()} | {a["id"]: a["content"] for a in tok["added_tokens"]}
    check(len(tokens) == config["vocab_size"], f"{out}: {len(tokens)} tokens")
    check(all(tokens[i] == s for i, s in by_id.items()), f"{out}: tokens differ from tokenizer.json")
    check(reader.fields["tokenizer.ggml.pre"].contents() == pre, f"{out}: pre-tokenizer")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    check(reader.fields["tokenizer.ggml.merges"].contents() == merges, f"{out}: merges")
    if len(failures) == before:
        print(f"ok {out}")


def check_adapter(model_dir, adapter_dir, qtype_name):
    before = len(failures)
    out = os.path.join(work, f"lora-{qtype_name}.gguf")
    subprocess.run([lowrank, "-q", "export", "--gguf", "--type", qtype_name, "--model", model_dir, "--adapter",
                    adapter_dir, "--out", out], check=True)
    reader = gguf.GGUFReader(out)
    compare_metadata(out, reader)
    check(reader.fields["general.type"].contents() == "adapter", "general.type")
    check(reader.fields["adapter.type"].contents() == "lora", "adapter.type")
    alpha = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))["lora_alpha"]
    check(reader.fields["adapter.lora.alpha"].contents() == alpha, "adapter.lora.alpha")
    config = json.load(open(os.path.join(model_dir, "config.json")))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    qtype = gguf.GGMLQuantizationType[qtype_name.upper()]
    tensors = {t.name: t for t in reader.tensors}
    hf = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    for name, w in hf.items():
        base = name.removeprefix("base_model.model.").replace(".lora_A", "").replace(".lora_B", "")
        new = names.get_name(base, try_suffixes=(".weight",)) + (".lora_a" if ".lora_A." in name else ".lora_b")
        if ".lora_B." in name and "q_proj" in name:
            w = permute(w, config["num_attention_heads"], config["num_attention_heads"])
        if ".lora_B." in name and "k_proj" in name:
            w = permute(w, config["num_attention_heads"], config["num_key_value_heads"])
        t = tensors.pop(new, None)
        check(t is not None and np.ascontiguousarray(t.data).tobytes() == expected_bytes(w, qtype),
              f"{out}: {new} differs")
    check(not tensors, f"{out}: extra tensors {list(tensors)}")
    if len(failures) == before:
        print(f"ok {out}")


llama_tiny = os.path.join(work, "llama-tiny")
shutil.copytree(os.path.join(fixtures, "hf/llama-tiny/model"), llama_tiny)
shutil.copy(os.path.join(fixtures, "hf/bpe-gpt2style/tokenizer.json"), os.path.join(llama_tiny, "tokenizer.json"))
for t in ("f32", "f16", "bf16"):
    check_model(llama_tiny, "llama", t, "gpt-2")
llama3 = make_model("llama3", LlamaForCausalLM, LlamaConfig, os.path.join(fixtures, "tokenizers/llama3-style/tokenizer.json"),
                    vocab_size=704, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=1)
for t in ("q8_0", "q4_0"):
    check_model(llama3, "llama", t, "llama-bpe")
qwen2 = make_model("qwen2", Qwen2ForCausalLM, Qwen2Config, os.path.join(fixtures, "tokenizers/qwen2-style/tokenizer.json"),
                   vocab_size=768, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, use_sliding_window=False)
for t in ("f32", "q8_0"):
    check_model(qwen2, "qwen2", t, "qwen2")
for t in ("f32", "f16"):
    check_adapter(llama_tiny, os.path.join(fixtures, "hf/llama-tiny/adapter-lora"), t)

if failures:
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("all GGUF files match the gguf package")
