"""lowrank's GaLore against galore-torch's GaLoreAdamW (galore_torch/adamw.py, the authors'
package), on the same float64 weights and gradients for 7 steps with update_proj_gap 3, so the
projectors are recomputed at steps 0, 3 and 6 (Adam moments kept across them, as GaLore does).
A tall weight (right projector) and a wide one (left projector), rank 4, scale 0.25, decoupled
weight decay 0.1 after the update, eps 1e-6.

galore-torch computes its SVD in float32 and casts the projector back to float64; lowrank keeps
float64. The weights therefore agree to about 3e-8 rather than bit for bit (a projector off by
float32 rounding); the tolerance 1e-7 is far below what a wrong choice moves them: a step moves a
weight by about 5e-3, and applying the decay before instead of after the update, for one, moves it
by lr·λ·5e-3 = 5e-6 per step.

  python galore_interop.py <galore_driver> <work dir>
Exit 0 on agreement, 1 on a mismatch, 77 (skip) when galore-torch is not importable.
"""
import json
import pathlib
import subprocess
import sys
import warnings

try:
    import torch
    from galore_torch import GaLoreAdamW
    from safetensors.torch import load_file, save_file
except ImportError as e:  # the peer stack is optional
    print(f"skip: {e}")
    sys.exit(77)

STEPS, LR, RANK, GAP, SCALE, DECAY, EPS = 7, 0.01, 4, 3, 0.25, 0.1, 1e-6
SHAPES = {"layers.0.mlp.up_proj.weight": (24, 16), "layers.0.self_attn.q_proj.weight": (16, 24)}


def main():
    driver, work = sys.argv[1], pathlib.Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    weights = {n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in SHAPES.items()}
    grads = [{n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in SHAPES.items()}
             for _ in range(STEPS)]
    inputs = {f"w.{n}": w for n, w in weights.items()}
    for k, g in enumerate(grads):
        inputs.update({f"g{k}.{n}": t for n, t in g.items()})
    save_file(inputs, str(work / "in.safetensors"), metadata={"steps": str(STEPS), "lr": repr(LR)})
    options = {"rank": RANK, "update_gap": GAP, "scale": SCALE, "weight_decay": DECAY, "eps": EPS,
               "beta1": 0.9, "beta2": 0.999}
    subprocess.run([driver, str(work / "in.safetensors"), "galore", json.dumps(options),
                    str(work / "out.safetensors")], check=True)
    ours = load_file(str(work / "out.safetensors"))

    params = {n: torch.nn.Parameter(w.clone()) for n, w in weights.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        opt = GaLoreAdamW([{"params": list(params.values()), "rank": RANK, "update_proj_gap": GAP,
                            "scale": SCALE, "proj_type": "std"}],
                          lr=LR, betas=(0.9, 0.999), eps=EPS, weight_decay=DECAY)
    worst = 0.0
    for k in range(STEPS):
        for n, p in params.items():
            p.grad = grads[k][n].clone()
        opt.step()
        for n, p in params.items():
            diff = (ours[f"w{k}.{n}"] - p.detach()).abs().max().item()
            moved = (p.detach() - weights[n]).abs().max().item()
            print(f"step {k} {n}: max |lowrank - galore_torch| = {diff:.3e} (moved {moved:.3e})")
            worst = max(worst, diff)
    if worst > 1e-7:
        print(f"FAIL: lowrank's GaLore differs from galore-torch by {worst:.3e}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
