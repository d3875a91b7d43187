// Fira — Chen et al., 2024, "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank
// Constraint?", arXiv:2410.01623; code xichen-fy/Fira (optimizer_torch/fira_adamw.py).
//
// GaLore's step (galore.h) plus a full-rank residual with norm-based scaling (paper Eq. 8-9):
//   sub = α·up(R)                              (the code's back-projection includes α)
//   φ   = ‖N‖₂ / (‖R‖₂ + 1e-8), taken along the low-rank dimension: per row of G [m, 1] when G is
//         tall (R [m, r]), per column [1, n] when wide (R [r, n]); N is M/(√V+ε), not bias-corrected
//   S   = (G − sub) ⊙ φ
// and the norm-growth limiter (Eq. 10), γ = 1.01:
//   first step: s ← ‖S‖_F
//   later:      ℓ = max(‖S‖_F / (s + 1e-8), γ) / γ;  S ← S / ℓ;  s ← ‖S‖_F (after the division)
// so ‖S_t‖ ≤ γ·‖S_{t−1}‖. The update is W ← W − s_t·(α·up(N) + S) with GaLore's bias-corrected
// step size s_t (S gets no α), then W ← W − η·λ·W.
// Reproduced quirk: the residual is G − α·P Pᵀ G (the code), not G − P Pᵀ G (the paper), so with
// α = 0.25 a further 0.75·P Pᵀ G leaks into S; this is what the published numbers use.
#pragma once

#include <optional>

#include <ATen/ATen.h>

#include "lowrank/optim/methods.h"

namespace lowrank::optim {

struct FiraResidual {
  at::Tensor s;  // S after the limiter, like G
  double norm;   // ‖S‖_F after the limiter: the next step's s
};

// S from the gradient g [m, n], its projection r (2-D low-rank), the Adam direction n (r's shape)
// and sub = α·up(r) [m, n]; `previous` is the last step's norm (nullopt on the first step).
// Throws InvalidArgument when r is not 2-D or the shapes disagree.
FiraResidual fira_residual(const at::Tensor& g, const at::Tensor& r, const at::Tensor& n,
                           const at::Tensor& sub, std::optional<double> previous, double gamma = 1.01);

LowRankConfig fira_defaults();
void register_fira(Registry<OptimizerMethod>& registry);

}  // namespace lowrank::optim
