"""DCNv2 inference: lowrank (build/bin/bench_ctr, run by this script first) against PyTorch eager on
the same weights and rows, in one run on one machine. bench_ctr writes its model (DeepCTR-Torch's
tensor names, nn/ctr.h) and a batch of rows; this script builds DeepCTR's DCN forward
(cross_parameterization="matrix") in PyTorch from that file, checks its logits against ours, and
times batch 1 and 4096 under torch.inference_mode on the same number of threads.
Target (issue: SMASH SpGEMM, CTR compression …, performance table): ≥ 3× at batch 1, ≥ 1× at 4096.

Run with the peer stack (after scripts/build --target bench_ctr):
  .venv-peers/bin/python bench/peers/ctr.py [--threads 2] [--repeats 20] [--out bench/results/ctr.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_seconds  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Dcnv2(torch.nn.Module):
    """DeepCTR-Torch's DCN with cross_parameterization="matrix" (models/dcn.py, layers/interaction.py
    CrossNet), reading the file's tensors."""

    def __init__(self, config, tensors, linear_cross=False):
        super().__init__()
        self.linear_cross = linear_cross
        self.fields = [f["name"] for f in config["sparse_fields"]]
        self.emb = torch.nn.ModuleDict()
        self.lin = torch.nn.ModuleDict()
        for f in self.fields:
            w = tensors[f"embedding_dict.{f}.weight"]
            self.emb[f] = torch.nn.Embedding.from_pretrained(w, freeze=True)
            self.lin[f] = torch.nn.Embedding.from_pretrained(tensors[f"linear_model.embedding_dict.{f}.weight"],
                                                             freeze=True)
        self.linear_dense = tensors["linear_model.weight"]
        self.dnn = torch.nn.ModuleList()
        i = 0
        while f"dnn.linears.{i}.weight" in tensors:
            w = tensors[f"dnn.linears.{i}.weight"]
            layer = torch.nn.Linear(w.shape[1], w.shape[0])
            layer.weight.data.copy_(w)
            layer.bias.data.copy_(tensors[f"dnn.linears.{i}.bias"])
            self.dnn.append(layer)
            i += 1
        self.kernels = tensors["crossnet.kernels"]
        self.cross_bias = tensors["crossnet.bias"]
        self.out_weight = tensors["dnn_linear.weight"]
        self.out_bias = tensors["out.bias"]

    def forward(self, sparse, dense):
        logit = dense @ self.linear_dense
        embs = []
        for j, f in enumerate(self.fields):
            ids = sparse[:, j]
            embs.append(self.emb[f](ids))
            logit = logit + self.lin[f](ids)
        x0 = torch.cat(embs + [dense], dim=1)
        h = x0
        for layer in self.dnn:
            h = torch.relu(layer(h))
        if self.linear_cross:
            # The same cross layer as one GEMM per layer (x_l C_lᵀ + c_l) instead of DeepCTR's batched
            # matrix-vector products: the faster eager form.
            x_l = x0
            for i in range(self.kernels.shape[0]):
                x_l = x0 * torch.nn.functional.linear(x_l, self.kernels[i], self.cross_bias[i].squeeze(1)) + x_l
        else:
            x_0 = x0.unsqueeze(2)
            x_l = x_0
            for i in range(self.kernels.shape[0]):
                x_l = x_0 * (torch.matmul(self.kernels[i], x_l) + self.cross_bias[i]) + x_l
            x_l = x_l.squeeze(2)
        stack = torch.cat([x_l, h], dim=-1)
        return (logit + stack @ self.out_weight.t()).squeeze(1) + self.out_bias


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/ctr.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ours_json = os.path.join(tmp, "ours.json")
        model_dir = os.path.join(tmp, "model")
        env = dict(os.environ, LOWRANK_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
        subprocess.run([os.path.join(ROOT, "build/bin/bench_ctr"), "--out", ours_json, "--model-out", model_dir,
                        "--repeats", str(a.repeats)], check=True, env=env)
        with open(ours_json) as fh:
            ours = json.load(fh)
        with open(os.path.join(model_dir, "ctr_config.json")) as fh:
            config = json.load(fh)
        tensors = load_file(os.path.join(model_dir, "model.safetensors"))
        models = {"deepctr": Dcnv2(config, tensors).eval(), "linear_cross": Dcnv2(config, tensors, True).eval()}
        rows = load_file(os.path.join(model_dir, "rows.safetensors"))
        expected = load_file(os.path.join(model_dir, "logits.safetensors"))["logits"]
    sparse, dense = rows["sparse"].long(), rows["dense"].float()
    with torch.inference_mode():
        diff = max((m(sparse, dense) - expected).abs().max().item() for m in models.values())
    print(f"PyTorch {torch.__version__} eager vs lowrank logits: max |diff| {diff:.2e}")
    out_rows = []
    for r in ours["rows"]:
        b = r["batch"]
        s, d = sparse[:b], dense[:b]
        reps = a.repeats * 20 if b == 1 else a.repeats

        times = {}
        for name, model in models.items():
            def run(model=model):
                with torch.inference_mode():
                    model(s, d)

            times[name] = median_seconds(run, reps)
        t = min(times.values())
        row = dict(r, pytorch_seconds=t, pytorch_deepctr_seconds=times["deepctr"],
                   pytorch_linear_cross_seconds=times["linear_cross"], ours_vs_pytorch=t / r["dense_seconds"])
        out_rows.append(row)
        print(f"batch {b:5d}: lowrank {r['dense_seconds'] * 1e6:9.1f} us, AFM 3x {r['afm3x_seconds'] * 1e6:9.1f} us, "
              f"PyTorch eager {times['deepctr'] * 1e6:9.1f} us (DeepCTR's cross) / "
              f"{times['linear_cross'] * 1e6:9.1f} us (GEMM cross) -> lowrank {t / r['dense_seconds']:.2f}x the faster")
    result = dict(ours, rows=out_rows, pytorch=torch.__version__, max_logit_diff=diff, threads=a.threads)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=1)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
