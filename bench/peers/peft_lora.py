"""The bench_adapters workload in transformers + PEFT (CPU, float32), for comparison.

Same model shape (Llama, hidden 256, 4 layers, 8 heads, MLP 688, vocab 4096, random weights),
batch x seq = 8 x 512, LoRA r = 16, alpha = 32 on q/k/v/o/gate/up/down with non-zero B. Each case
is the median of --repeats runs after a warm-up, in this one process, and every ratio is of two
cases timed alternately (timing.py):
  base        forward of the PeftModel with its adapter disabled (merged: of an unadapted copy)
  lora        forward of the PeftModel, unmerged
  merged      forward after merge_and_unload()
  train       forward + backward + AdamW step on the LoRA tensors
  full_train  forward + backward + AdamW step on every tensor
  mixed_K     PEFT's mixed-adapter batch (adapter_names=...): 32 rows x 128 tokens, 32 adapters of
              ranks 8, 16, 32, 64 in turn, row b uses adapter b mod K, K = 1, 8, 32; against the
              base forward of the same batch
Run with the peer stack: .venv-peers/bin/python bench/peers/peft_lora.py [--threads N] [--json]
"""
import argparse
import json

import timing  # bench/peers/timing.py
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--threads", type=int, default=0)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)


def paired(a, b):
    return timing.paired_median_seconds(a, b, args.repeats)


config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                     num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024,
                     rms_norm_eps=1e-5, tie_word_embeddings=False)
model = LlamaForCausalLM(config).eval()
ids = torch.randint(0, 4096, (8, 512))
windows = torch.randint(0, 4096, (8, 513))


def forward(m):
    with torch.inference_mode():
        m(ids)


def loss(m):
    logits = m(windows[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1))


# Every ratio comes from two cases timed alternately (timing.paired_median_seconds), as in
# bench_adapters.
peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
with torch.no_grad():
    for n, p in peft_model.named_parameters():
        if "lora_" in n:
            p.normal_(0, 0.02)


def without_adapter(m):
    def run():
        with m.disable_adapter():
            forward(m)
    return run


base, lora = paired(without_adapter(peft_model), lambda: forward(peft_model))

params = [p for p in peft_model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0)
full_model = LlamaForCausalLM(config)
full_opt = torch.optim.AdamW(full_model.parameters(), lr=1e-4, weight_decay=0)


def lora_step():
    opt.zero_grad()
    loss(peft_model).backward()
    opt.step()


def full_step():
    full_opt.zero_grad()
    loss(full_model).backward()
    full_opt.step()


train, full_train = paired(lora_step, full_step)
merged_model = peft_model.merge_and_unload()
plain = LlamaForCausalLM(config).eval()
base_merged, merged = paired(lambda: forward(plain), lambda: forward(merged_model))
# Mixed-adapter batches.
mixed_base_model = LlamaForCausalLM(config).eval()
mixed_ids = torch.randint(0, 4096, (32, 128))
ranks = [8, 16, 32, 64]
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
mixed_model = get_peft_model(mixed_base_model, LoraConfig(r=8, lora_alpha=16, target_modules=targets),
                             adapter_name="adapter0")
for i in range(1, 32):
    mixed_model.add_adapter(f"adapter{i}", LoraConfig(r=ranks[i % 4], lora_alpha=2 * ranks[i % 4],
                                                      target_modules=targets))
with torch.no_grad():
    for n, p in mixed_model.named_parameters():
        if "lora_" in n:
            p.normal_(0, 0.02)
mixed_model.eval()
mixed = {}


def mixed_forward(names):
    def run():
        with torch.inference_mode():
            mixed_model(mixed_ids, adapter_names=names)
    return run


def mixed_base_forward():
    with torch.inference_mode(), mixed_model.disable_adapter():
        mixed_model(mixed_ids)


for k in (1, 8, 32):
    tb, t = paired(mixed_base_forward, mixed_forward([f"adapter{b % k}" for b in range(32)]))
    mixed_base = tb
    mixed[str(k)] = {"seconds": t, "base_seconds": tb, "ratio": t / tb}

out = {"threads": torch.get_num_threads(), "torch": torch.__version__,
       "seconds": {"base": base, "lora": lora, "merged": merged, "train": train, "full_train": full_train},
       "ratio": {"lora_over_base": lora / base, "merged_over_base": merged / base_merged,
                 "train_over_full_train": train / full_train},
       "mixed_batch": {"base_seconds": mixed_base, "distinct_adapters": mixed}}
if args.json:
    print(json.dumps(out, indent=2))
else:
    for k, v in out["seconds"].items():
        print(f"{k:12s} {v:10.4f}")
    for k, v in out["ratio"].items():
        print(f"{k:24s} {v:8.3f}")
    for k, v in mixed.items():
        print(f"mixed {k:>2s} distinct adapters {v['seconds']:10.4f} s {v['ratio']:8.3f} x base")
