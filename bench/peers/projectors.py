"""The bench_projectors workload in PyTorch: torch.svd_lowrank and galore-torch, for comparison.

Gradient sequence: the distribution of bench/projectors.cpp, drawn with PyTorch's generator (the
same law, not the same numbers). For a shape m x n and rank r, K = min(2r, min(m, n)):
  G_t = U_t diag(s) V_t^T + sigma N_t,  s_i = i^(-1/2) (i = 1..K),  N_t iid N(0, 1), fresh per t,
sigma such that the noise carries 10% of E||G||^2; between refreshes U_{t+1} = orth(U_t + delta E)
with E iid N(0, 1/m) (V likewise, 1/n), delta = --drift.

Part 1, refresh at rank r (default d/8, d = min(m, n)), on G_1..G_T after G_0 (--refreshes T):
  svd_lowrank  torch.svd_lowrank(G, q=r, niter=2), timed on every gradient (median reported)
  exact        torch.linalg.svd(G, full_matrices=False), on the last gradient (all for d <= 2048)
Captured energy on GaLore's side (left U[:, :r] when m < n, else right V[:, :r]):
||P^T G||^2 / ||G||^2, against the exact top-r energy on the same gradient.

Part 2, galore-torch (PyPI galore-torch 1.0, GaLoreAdamW: rank d/4, update_proj_gap 200,
scale 0.25, proj_type "std") against torch.optim.AdamW on one parameter of the shape: state bytes
(exp_avg + exp_avg_sq, and the projector's ortho_matrix), the step without refresh (paired with
AdamW's, timing.py), one refresh step (state["step"] set to 200: a full torch.linalg.svd, as
galore-torch does on every refresh; timed once), and the amortised step
(t_refresh_step + 199 t_step) / 200. Skipped, with the reason, when galore_torch does not import.

Part 3, the whole training step of bench_projectors' LLaMA-shaped model (transformers
LlamaForCausalLM, random weights: --model-hidden 512, 8 heads of 64, MLP 8/3 hidden rounded up to
32, --model-layers 4, vocab 8192, untied), forward + backward of the LM loss on --model-batch x
--model-seq tokens + the optimizer step: torch.optim.AdamW against galore-torch's GaLoreAdamW
(rank hidden/4, update_proj_gap 200, scale 0.25, on the attention and MLP weights as GaLore's
torchrun_main.py selects them; AdamW for the rest), on two copies of the model, timed alternately;
a refresh step (every GaLore state's step set to 200: full SVDs) timed once; the amortised step
over AdamW's.

Run with the peer stack:
  .venv-peers/bin/python bench/peers/projectors.py [--threads N] [--shapes 1024x1024,4096x11008]
      [--quick] [--rank r] [--refreshes 4] [--repeats 3] [--drift 0.3] [--json] [--refresh-only]
      [--model-step-only] [--model-hidden 512] [--model-layers 4] [--model-batch 8] [--model-seq 256]
"""
import argparse
import json
import math
import time

import timing  # bench/peers/timing.py
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--shapes", default="1024x1024,2048x2048,4096x4096,4096x11008")
parser.add_argument("--quick", action="store_true", help="small shapes: 512x512,1024x2752")
parser.add_argument("--rank", type=int, default=0)
parser.add_argument("--refreshes", type=int, default=4)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--drift", type=float, default=0.3)
parser.add_argument("--threads", type=int, default=0)
parser.add_argument("--json", action="store_true")
parser.add_argument("--refresh-only", action="store_true", help="part 1 only")
parser.add_argument("--model-step-only", action="store_true", help="part 3 only")
parser.add_argument("--model-hidden", type=int, default=512)
parser.add_argument("--model-layers", type=int, default=4)
parser.add_argument("--model-batch", type=int, default=8)
parser.add_argument("--model-seq", type=int, default=256)
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
if args.quick:
    args.shapes = "512x512,1024x2752"
torch.set_grad_enabled(False)

try:
    from galore_torch import GaLoreAdamW
    galore_error = None
except ImportError as e:  # galore-torch (or the bitsandbytes its package imports) missing
    GaLoreAdamW = None
    galore_error = f"galore_torch does not import: {e}"


class GradientSequence:
    """The drifting gradient sequence of the module docstring."""

    def __init__(self, m, n, r, drift, seed):
        self.m, self.n, self.drift = m, n, drift
        self.gen = torch.Generator().manual_seed(seed)
        k = min(2 * r, m, n)
        self.s = torch.arange(1, k + 1, dtype=torch.float32).pow(-0.5)
        self.sigma = math.sqrt(0.1 / 0.9 * float(self.s.square().sum()) / (m * n))
        self.U = torch.linalg.qr(torch.randn(m, k, generator=self.gen)).Q
        self.V = torch.linalg.qr(torch.randn(n, k, generator=self.gen)).Q

    def next(self):
        G = (self.U * self.s) @ self.V.T
        G.add_(torch.randn(self.m, self.n, generator=self.gen), alpha=self.sigma)
        self.U = torch.linalg.qr(self.U + torch.randn(self.U.shape, generator=self.gen)
                                 * (self.drift / math.sqrt(self.m))).Q
        self.V = torch.linalg.qr(self.V + torch.randn(self.V.shape, generator=self.gen)
                                 * (self.drift / math.sqrt(self.n))).Q
        return G


def energy(G, U, V, r):
    """Captured energy of the rank-r basis on GaLore's side: left U when m < n, else right V."""
    low = U[:, :r].T @ G if G.shape[0] < G.shape[1] else G @ V[:, :r]
    return float(low.square().sum() / G.square().sum())


def seconds(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def refresh_case(m, n, r):
    seq = GradientSequence(m, n, r, args.drift, 1000 + m * 7 + n)
    seq.next()  # G_0: the projector's cold refresh in bench_projectors; nothing to warm-start here
    exact_every = min(m, n) * m * n <= 2048 ** 3
    t_low, t_exact, ratios = [], [], []
    for t in range(1, args.refreshes + 1):
        G = seq.next()
        dt, (U, S, V) = seconds(lambda: torch.svd_lowrank(G, q=r, niter=2))
        t_low.append(dt)
        e_low = energy(G, U, V, r)
        if exact_every or t == args.refreshes:
            dt, (Ue, Se, Vhe) = seconds(lambda: torch.linalg.svd(G, full_matrices=False))
            t_exact.append(dt)
            e_exact = float(Se[:r].square().sum() / G.square().sum())
            ratios.append(e_low / e_exact)
    return {"shape": f"{m}x{n}", "rank": r, "refreshes": args.refreshes,
            "seconds": {"exact": sorted(t_exact)[len(t_exact) // 2],
                        "svd_lowrank": sorted(t_low)[len(t_low) // 2]},
            "energy_last": {"exact": e_exact, "svd_lowrank": e_low},
            "energy_over_exact_last": {"svd_lowrank": e_low / e_exact},
            "energy_over_exact_min": {"svd_lowrank": min(ratios)}}


def state_bytes(state, keys):
    return sum(state[k].nbytes for k in keys if k in state)


def galore_case(m, n):
    r, gap = min(m, n) // 4, 200
    seq = GradientSequence(m, n, r, args.drift, 2000 + m * 7 + n)
    gen = torch.Generator().manual_seed(3)
    w_galore = torch.nn.Parameter(torch.randn(m, n, generator=gen) * 0.02)
    w_adamw = torch.nn.Parameter(w_galore.detach().clone())
    G0 = seq.next()
    w_galore.grad, w_adamw.grad = G0, G0.clone()
    galore = GaLoreAdamW([{"params": [w_galore], "rank": r, "update_proj_gap": gap, "scale": 0.25,
                           "proj_type": "std"}], lr=1e-3, weight_decay=0.0, no_deprecation_warning=True)
    adamw = torch.optim.AdamW([w_adamw], lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)
    galore.step()  # step 0: the first SVD and the states
    adamw.step()
    w_galore.grad = seq.next()
    gs, ads = galore.state[w_galore], adamw.state[w_adamw]
    galore_states = state_bytes(gs, ("exp_avg", "exp_avg_sq"))
    projector = gs["projector"].ortho_matrix.nbytes
    adamw_states = state_bytes(ads, ("exp_avg", "exp_avg_sq"))
    t_step, t_adamw = timing.paired_median_seconds(galore.step, adamw.step, args.repeats)
    gs["step"] = gap  # the next step refreshes the projector (a full SVD), then updates
    t_refresh_step, _ = seconds(galore.step)
    amortised = (t_refresh_step + (gap - 1) * t_step) / gap
    return {"shape": f"{m}x{n}", "rank": r, "update_gap": gap,
            "bytes": {"adamw_states": adamw_states, "galore_states": galore_states,
                      "galore_projector": projector,
                      "states_over_adamw": galore_states / adamw_states,
                      "states_and_projector_over_adamw": (galore_states + projector) / adamw_states},
            "seconds": {"adamw_step": t_adamw, "galore_step": t_step,
                        "galore_refresh_step": t_refresh_step, "galore_amortised": amortised},
            "optimizer_overhead": amortised / t_adamw - 1}


def model_step_case():
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, gap = args.model_hidden // 64 * 64, 200
    r = hidden // 4
    config = LlamaConfig(vocab_size=8192, hidden_size=hidden, intermediate_size=(8 * hidden // 3 + 31) // 32 * 32,
                         num_hidden_layers=args.model_layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=hidden // 64, max_position_embeddings=1024, rms_norm_eps=1e-5,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model_adamw = LlamaForCausalLM(config)
    model_galore = LlamaForCausalLM(config)
    model_galore.load_state_dict(model_adamw.state_dict())
    low_rank = [p for n, p in model_galore.named_parameters() if p.dim() == 2 and ("self_attn" in n or "mlp" in n)]
    ids = {id(p) for p in low_rank}
    regular = [p for p in model_galore.parameters() if id(p) not in ids]
    galore = GaLoreAdamW([{"params": regular}, {"params": low_rank, "rank": r, "update_proj_gap": gap,
                                                "scale": 0.25, "proj_type": "std"}], lr=1e-3,
                         no_deprecation_warning=True)
    adamw = torch.optim.AdamW(model_adamw.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(5)
    windows = torch.randint(8192, (args.model_batch, args.model_seq + 1), generator=gen)

    def step(model, optimizer):
        with torch.enable_grad():
            optimizer.zero_grad()
            model(input_ids=windows[:, :-1], labels=windows[:, 1:].clone()).loss.backward()
            optimizer.step()

    step(model_galore, galore)  # step 0: the first SVDs and the states
    t_step, t_adamw = timing.paired_median_seconds(lambda: step(model_galore, galore),
                                                   lambda: step(model_adamw, adamw), args.repeats)
    for p in low_rank:
        galore.state[p]["step"] = gap  # the next step refreshes every projector (full SVDs)
    t_refresh_step, _ = seconds(lambda: step(model_galore, galore))
    amortised = (t_refresh_step + (gap - 1) * t_step) / gap
    return {"model": {"hidden": hidden, "layers": args.model_layers,
                      "parameters": sum(p.numel() for p in model_adamw.parameters())},
            "tokens_per_step": args.model_batch * args.model_seq, "rank": r, "update_gap": gap,
            "seconds": {"adamw_step": t_adamw, "galore_step": t_step, "galore_refresh_step": t_refresh_step,
                        "galore_amortised": amortised},
            "step_overhead": amortised / t_adamw - 1}


refresh, galore = [], []
for item in ([] if args.model_step_only else args.shapes.split(",")):
    m, n = (int(v) for v in item.split("x"))
    d = min(m, n)
    r = min(args.rank, d) if args.rank > 0 else max(1, d // 8)
    one = refresh_case(m, n, r)
    refresh.append(one)
    if not args.json:
        print(f"{one['shape']:10} r={r:<4} exact {one['seconds']['exact']:8.3f} s | svd_lowrank "
              f"{one['seconds']['svd_lowrank']:7.3f} s  E/E* "
              f"{one['energy_over_exact_last']['svd_lowrank']:.4f} | E* {one['energy_last']['exact']:.4f}",
              flush=True)
    if GaLoreAdamW is None or args.refresh_only:
        continue
    g = galore_case(m, n)
    galore.append(g)
    if not args.json:
        print(f"{g['shape']:10} galore-torch r={g['rank']:<4} states "
              f"{g['bytes']['states_over_adamw']:.3f} of adamw (+projector "
              f"{g['bytes']['states_and_projector_over_adamw']:.3f}) | step "
              f"{g['seconds']['galore_step']:.4f} s, refresh step {g['seconds']['galore_refresh_step']:.3f} s, "
              f"amortised {g['seconds']['galore_amortised']:.4f} s vs adamw {g['seconds']['adamw_step']:.4f} s: "
              f"{100 * g['optimizer_overhead']:+.0f}%", flush=True)

whole_step = None
if GaLoreAdamW is not None and not args.refresh_only:
    whole_step = model_step_case()
    if not args.json:
        w = whole_step
        print(f"model h{w['model']['hidden']} L{w['model']['layers']} ({w['model']['parameters'] / 1e6:.1f}M "
              f"parameters), {w['tokens_per_step']} tokens/step, galore-torch r={w['rank']} T={w['update_gap']}: "
              f"adamw step {w['seconds']['adamw_step']:.3f} s, galore step {w['seconds']['galore_step']:.3f} s, "
              f"refresh step {w['seconds']['galore_refresh_step']:.3f} s, amortised "
              f"{w['seconds']['galore_amortised']:.3f} s: {100 * w['step_overhead']:+.1f}%", flush=True)
if galore_error and not args.json:
    print(f"galore-torch skipped: {galore_error}")
if args.json:
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "drift": args.drift,
                      "refresh": refresh, "galore_torch": galore if galore_error is None else galore_error,
                      "model_step": whole_step}, indent=2))
