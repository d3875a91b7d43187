"""Cross-check of lowrank's adapters against PEFT (PyPI) on the bundled tiny Llama.

1. lowrank -> PEFT: `lowrank finetune` trains LoRA, rsLoRA, DoRA and PiSSA adapters for a few
   steps (so that B != 0); PEFT loads each directory and must give the logits `lowrank logits
   --adapter` gives (max abs difference <= 1e-4).
2. PEFT -> lowrank: PEFT creates LoRA, rsLoRA + rank/alpha patterns + layers_to_transform,
   DoRA, modules_to_save, and PiSSA (as saved before and after PEFT's conversion to LoRA) with
   non-zero weights; lowrank must reproduce PEFT's logits.

usage: peft_interop.py LOWRANK_BINARY MODEL_DIR TOKENIZER_JSON CORPUS_TXT WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

try:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import LlamaForCausalLM
except ImportError as e:  # the peer stack is installed by scripts/setup
    print(f"SKIP: {e}")
    sys.exit(77)

lowrank, model_src, tokenizer, corpus, work = sys.argv[1:6]
torch.manual_seed(0)
torch.set_num_threads(1)
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
model_dir = os.path.join(work, "model")
shutil.copytree(model_src, model_dir)
shutil.copy(tokenizer, os.path.join(model_dir, "tokenizer.json"))

ids = torch.tensor([[1, 17, 240, 33, 5, 99, 310, 7, 64, 12, 400, 2], [1, 3, 3, 80, 81, 82, 200, 201, 9, 10, 11, 12]])
ids_file = os.path.join(work, "ids.safetensors")
save_file({"input_ids": ids}, ids_file)
failures = []


def base_model():
    return LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def lowrank_logits(adapter_dir):
    out = os.path.join(work, "logits.safetensors")
    subprocess.run([lowrank, "-q", "logits", "--model", model_dir, "--adapter", adapter_dir, "--input", ids_file,
                    "--out", out], check=True)
    return load_file(out)["logits"]


def compare(what, peft_model, adapter_dir):
    with torch.no_grad():
        expected = peft_model(ids).logits
    got = lowrank_logits(adapter_dir)
    with torch.no_grad():
        base = base_model()(ids).logits
    diff = (got - expected).abs().max().item()
    moved = (expected - base).abs().max().item()
    ok = diff <= 1e-4 and moved > 1e-3
    print(f"{what:48s} max|lowrank - peft| = {diff:.2e}  (adapter moves logits by {moved:.2e})  {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(what)


# 1. lowrank -> PEFT.
for method, extra in [("lora", {}), ("lora", {"use_rslora": True, "lora_alpha": 16}), ("dora", {}),
                      ("pissa", {})]:
    name = method + ("-rslora" if extra.get("use_rslora") else "")
    out = os.path.join(work, "lowrank-" + name)
    config = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]}
    config.update(extra)
    subprocess.run([lowrank, "-q", "finetune", "--model", model_dir, "--method", method, "--config",
                    json.dumps(config), "--data", corpus, "--out", out, "--steps", "4", "--batch", "2",
                    "--seq-len", "32", "--lr", "0.01", "--checkpoint-every", "1000"], check=True,
                   stdout=subprocess.DEVNULL)
    compare(f"lowrank {name} loaded by PEFT", PeftModel.from_pretrained(base_model(), out).eval(), out)


# 2. PEFT -> lowrank.
def peft_adapter(name, config, perturb=True, convert_from=None):
    model = get_peft_model(base_model(), config)
    if perturb:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_" in n:
                    p.add_(torch.randn_like(p) * 0.05)
    out = os.path.join(work, "peft-" + name)
    if convert_from is not None:
        model.save_pretrained(out, path_initial_model_for_weight_conversion=convert_from)
    else:
        model.save_pretrained(out)
    return model.eval(), out


targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
compare("PEFT LoRA (init_lora_weights=False)",
        *peft_adapter("lora", LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)))
compare("PEFT rsLoRA + rank/alpha patterns + layers",
        *peft_adapter("rslora", LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj",
                                                                                                 "down_proj"],
                                           rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 3},
                                           layers_to_transform=[1], init_lora_weights=False)))
compare("PEFT DoRA", *peft_adapter("dora", LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=targets)))
compare("PEFT LoRA + modules_to_save lm_head",
        *peft_adapter("mts", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"],
                                        init_lora_weights=False)))
compare("PEFT PiSSA (residual form)",
        *peft_adapter("pissa", LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights="pissa")))
# PEFT's conversion to a plain rank-2r LoRA needs the initial PiSSA adapter saved first.
init_model = get_peft_model(base_model(), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                     init_lora_weights="pissa"))
init_dir = os.path.join(work, "peft-pissa-init")
init_model.peft_config["default"].init_lora_weights = True
init_model.save_pretrained(init_dir)
with torch.no_grad():
    for n, p in init_model.named_parameters():
        if "lora_" in n:
            p.add_(torch.randn_like(p) * 0.05)
converted = os.path.join(work, "peft-pissa-converted")
init_model.save_pretrained(converted, path_initial_model_for_weight_conversion=init_dir)
compare("PEFT PiSSA converted to a rank-2r LoRA", init_model.eval(), converted)

# RandLoRA (peft_type RANDLORA): PEFT's files carry the shared random bases (save_projection).
# PEFT -> lowrank with non-zero lambdas (dense and sparse bases), lowrank -> PEFT after a few
# finetune steps, and lowrank's bases for a seed equal those PEFT draws for it.
from peft import RandLoraConfig  # noqa: E402

randlora_targets = ["q_proj", "v_proj", "up_proj", "down_proj"]


def peft_randlora(name, **options):
    model = get_peft_model(base_model(), RandLoraConfig(r=4, randlora_alpha=8, target_modules=randlora_targets,
                                                        **options))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "randlora_lambda" in n:  # zero at initialisation
                p.add_(torch.randn_like(p) * 0.05)
            if "randlora_gamma" in n:
                p.mul_(1 + torch.rand_like(p))
    out = os.path.join(work, "peft-" + name)
    model.save_pretrained(out)
    return model.eval(), out


compare("PEFT RandLoRA", *peft_randlora("randlora"))
compare("PEFT RandLoRA (sparse bases, seed 3)", *peft_randlora("randlora-sparse", sparse=True, projection_prng_key=3))
out = os.path.join(work, "lowrank-randlora")
subprocess.run([lowrank, "-q", "finetune", "--model", model_dir, "--method", "randlora", "--config",
                json.dumps({"r": 4, "randlora_alpha": 8, "target_modules": randlora_targets}), "--data", corpus,
                "--out", out, "--steps", "4", "--batch", "2", "--seq-len", "32", "--lr", "0.01",
                "--checkpoint-every", "1000"], check=True, stdout=subprocess.DEVNULL)
compare("lowrank randlora loaded by PEFT", PeftModel.from_pretrained(base_model(), out).eval(), out)
drawn = get_peft_model(base_model(), RandLoraConfig(r=4, randlora_alpha=8, target_modules=randlora_targets))
written = load_file(os.path.join(out, "adapter_model.safetensors"))
same = all(torch.equal(written["base_model.randlora_" + k], getattr(drawn.base_model, "randlora_" + k)["default"])
           for k in "AB")
print(f"{'lowrank randlora bases equal PEFT draws (seed 0)':48s} {'ok' if same else 'FAIL'}")
if not same:
    failures.append("randlora bases")

if failures:
    print("FAILED:", ", ".join(failures))
    sys.exit(1)
print("all PEFT cross-checks passed")
