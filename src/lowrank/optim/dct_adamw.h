// DCT-AdamW — Modoranu et al., 2025, "SVD-Free Low-Rank Adaptive Gradient Optimization for Large
// Language Models", arXiv:2505.17967; code IST-DASLab/ISTA-DASLab-Optimizers (fft_low_rank/,
// DCTAdamW).
//
// GaLore's structure with the SVD replaced by top-ℓ1 column selection in a fixed DCT basis
// (dct_projector.h), cheap enough to reselect every step:
//   W ← W·(1 − η·λ)
//   g = down(G)  (reselected every T = 1 steps by default)
//   M, V Adam update on g;  u = M / (ε·√(1−β2^t) + √V)
//   W ← W − η·√(1−β2^t)/(1−β1^t) · up(u)
// which is AdamW's ε placement (ε added to the bias-corrected √v̂), so LowRankAdam runs it with
// EpsPlacement::kAdamW and α = 1. Defaults: T = 1, β = (0.9, 0.999), ε = 1e-8, λ = 0, r = 128.
// Moments are kept (not rotated) when the selection changes, as the reference does without
// rotate_subspace. Deviations: no error feedback (MicroAdam-style EF), no state rotation, no
// max_shape rule (embeddings/lm_head are excluded by name instead, like the GaLore family).
#pragma once

#include "lowrank/optim/methods.h"

namespace lowrank::optim {

LowRankConfig dct_adamw_defaults();
void register_dct_adamw(Registry<OptimizerMethod>& registry);

}  // namespace lowrank::optim
