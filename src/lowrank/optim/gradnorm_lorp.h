// GradNormLoRP — Huang, Shen, Zhu, Rudinac & Kanoulas, 2024, "Gradient Weight-normalized Low-rank
// Projection for Efficient LLM Training", AAAI 2025, arXiv:2412.19616; code
// Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training
// (GradNormLoRP/LowRankWeightNormAdamW.py).
//
// The paper reparameterises each projected weight by weight normalisation (Salimans & Kingma,
// 2016): w = δ·v/‖v‖, per weight vector; for a matrix W = M·V/‖V‖_c with one magnitude per
// weight vector, and trains the direction V with a GaLore projection of its gradient
// (D̃ = U η(Uᵀ D V) Vᵀ, refreshed every T steps, scaled by α) and the magnitude M with plain
// Adam. The weight vectors are the output rows of the stored [out, in] weight (the code's
// norm(dim=1); the paper's column norm ‖·‖_c read in DoRA's [in, out] convention). Only the
// abstract and second-hand summaries of the paper's text could be checked; the equations below
// follow the code and Salimans & Kingma's weight-normalisation gradients.
//
// As LowRankAdam runs it, for a projected weight W [m, n], gradient G, rows i (g_i, v̂_i):
//   g = ‖W‖_row [m, 1];  v̂ = W/g;  V ≡ W (the direction's free scale is fixed to ‖V_i‖ = g_i)
//   ∇g_i = ⟨G_i, v̂_i⟩                            (Salimans & Kingma Eq. 3, left)
//   ∇V_i = (g_i/‖V_i‖)·(G_i − ∇g_i·v̂_i) = G_i − ∇g_i·v̂_i   (Eq. 3, right: the normalised gradient)
//   every T steps: refresh the projector from ∇V;  R = down(∇V)
//   GaLore's Adam core on R (galore.h): V' = W − s_t·α·up(N)
//   Adam on ∇g with its own moments [m, 1] (same β, ε placement, bias correction): g' = g − s_t·N_g
//   W ← g'·V'/‖V'‖_row;   W ← W − η·λ·W   (decay after the update, as GaLore; = decaying g and V)
// Rows with g_i = 0 (a zero-initialised LoRA B, say) have no direction: they take W_i ← V'_i.
// Deviations: the optimizer owns no copy of V (the code keeps a full clone of W): V is W itself,
// rescaled to ‖V_i‖ = g_i at every step, so the model keeps plain dense weights and the extra
// state is the m-vector of magnitude moments. This also replaces the code's bug of resetting g to
// ‖v‖ at every step (the learned magnitude lived one step): here it persists in W. The code
// omits the (I − v̂v̂ᵀ) term of ∇V; option orthogonal_grad = false reproduces that (∇V = G).
// Only the direction's moments are 8-bit with state_bits = 8 (the magnitude's are m floats).
// Defaults: GaLore's benchmark settings, which the paper's scripts reuse (r = 128, T = 200,
// α = 0.25, ε = 1e-6, β = (0.9, 0.999), λ = 0).
#pragma once

#include <ATen/ATen.h>

#include "lowrank/optim/adamw.h"
#include "lowrank/optim/methods.h"

namespace lowrank::optim {

// One weight's weight-norm split at the current point W [m, n] with gradient G [m, n].
struct WeightNormSplit {
  at::Tensor magnitude;       // g [m, 1] = ‖W_i‖
  at::Tensor grad_magnitude;  // ∇g [m, 1]
  at::Tensor grad_direction;  // ∇V [m, n] (with V ≡ W)
};

// The split above; `orthogonal` false gives the code's ∇V = G. Rows with g_i = 0 get ∇g_i = 0
// and ∇V_i = G_i. Throws InvalidArgument unless W and G are 2-D of one shape.
WeightNormSplit weight_norm_split(const at::Tensor& w, const at::Tensor& g, bool orthogonal);

// Adam on the magnitude: g' = g − s_t·N_g with `state` (moments [m, 1], own step count), the
// configuration's β, ε (placement kGaLore or kAdamW) and bias correction; no decay, no α.
at::Tensor magnitude_step(const at::Tensor& magnitude, const at::Tensor& grad_magnitude, AdamState& state,
                          const LowRankConfig& config, double lr);

// W = g'·V'/‖V'‖_row for rows whose old magnitude was > 0, V' elsewhere.
at::Tensor weight_norm_compose(const at::Tensor& new_magnitude, const at::Tensor& direction,
                               const at::Tensor& old_magnitude);

LowRankConfig gradnorm_lorp_defaults();
void register_gradnorm_lorp(Registry<OptimizerMethod>& registry);

}  // namespace lowrank::optim
