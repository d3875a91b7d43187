// GaLore — Zhao et al., 2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
// Projection", ICML 2024, arXiv:2403.03507; code jiaweizzhao/GaLore (galore_torch/adamw.py,
// galore_projector.py).
//
// GaLoreAdamW step on a projected weight (Alg. 1 with the code's order), as LowRankAdam runs it:
//   every T steps (from step 0): P or Q from the SVD of the current G (std side, svd_projector.h)
//   R = down(G);  M ← β1 M + (1−β1) R;  V ← β2 V + (1−β2) R²;  N = M / (√V + ε)
//   W ← W − η·√(1−β2^t)/(1−β1^t) · α·up(N);   W ← W − η·λ·W   (decay after, without α)
// Moments are neither reset nor re-projected on refresh and t keeps running (GaLore issue #54).
// Defaults are the paper's benchmark settings: r = 128, T = 200, α = 0.25, ε = 1e-6 (the class
// default; the paper says 1e-8), β = (0.9, 0.999), λ = 0. The CLI defaults of the repo (T = 50,
// α = 1) are one option away.
#pragma once

#include "lowrank/optim/methods.h"

namespace lowrank::optim {

LowRankConfig galore_defaults();
void register_galore(Registry<OptimizerMethod>& registry);

}  // namespace lowrank::optim
