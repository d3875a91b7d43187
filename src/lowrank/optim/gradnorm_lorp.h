// GradNormLoRP — Huang, Shen, Zhu, Rudinac & Kanoulas, 2024, "Gradient Weight-normalized Low-rank
// Projection for Efficient LLM Training", AAAI 2025, arXiv:2412.19616; code
// Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training
// (torchrun_main.py, test_fine.py, amfgalore.py; GradNormLoRP/galore_projector.py, adamw.py).
//
// Two registered optimizers live here.
//
// `gradnormlorp` — the paper's method, the optimizer half of a pair. The weights are
// W = M·(W₀ + IJ)/‖W₀ + IJ‖_c (weight-vector normalisation w = δ·v/‖v‖ with a frozen W₀ plus a
// low-rank IJ; train/gradnorm_lorp.h, or finetune's DoRA adapter), and the gradient D of each
// low-rank factor is projected:
//     D̃_t = U_t η_t(U_tᵀ D_t V_t) V_tᵀ
// with η_t Adam's entry-wise update. As the code runs it (GaLoreAdamW over the Linear weights of
// the attention/MLP modules, which after PEFT's DoRA wrapping are lora_A and lora_B; the base
// weights are frozen and the magnitude is a 1-D parameter in the plain AdamW group), for a factor
// F [p, q] with gradient D (t counts F's updates, k the optimizer's steps):
//   if k % T == 0: P ← the top min(r, p, q) singular vectors of D on F's short side
//                  (GaLore's one-sided "std" projector: U_t or V_t, not both)
//   R = down(D);  M ← β1 M + (1−β1) R;  V ← β2 V + (1−β2) R²;  N = M/(√V + ε)
//   F ← F − η·√(1−β2^t)/(1−β1^t)·α·up(N);   F ← F − η·λ·F
// and the magnitude M (and everything outside the attention/MLP factors) takes AdamW.
// Run it with `lowrank pretrain --parameterization gradnormlorp --optimizer gradnormlorp` or
// `lowrank finetune --method dora --optimizer gradnormlorp` (check_gradnorm_lorp_pairing,
// train/gradnorm_lorp.h, rejects any other pairing).
// Defaults: the code's pre-training scripts (GaLore's): r = 128, T = 200, α = 0.25, ε = 1e-6,
// β = (0.9, 0.999), λ = 0. With the factors' short side r_lora = 8 (the code's DoRA rank), a
// projection rank >= 8 spans it fully, as in the code (GaLore's U[:, :rank] clips): the step is
// then Adam in the rotating basis of D's singular vectors. Deviation: non-projected tensors use
// AdamW's ε placement and decay before the update (low_rank_adam.h), GaLoreAdamW's plain group
// uses ε 1e-6 added to √V and decay after.
//
// `wngalore` — the weight-normalised GaLore on *dense* weights (no low-rank weight part), the
// optimizer-only reading of the code's LowRankWeightNormAdamW / WeightNormGaLoreAdamW
// (GradNormLoRP/LowRankWeightNormAdamW.py, wadamw.py); not the paper's method. Each projected
// weight is split W = g·V/‖V‖_row and trained as below (LowRankAdam with weight_norm):
//   g = ‖W‖_row [m, 1];  v̂ = W/g;  V ≡ W (the direction's free scale is fixed to ‖V_i‖ = g_i)
//   ∇g_i = ⟨G_i, v̂_i⟩                            (Salimans & Kingma Eq. 3, left)
//   ∇V_i = (g_i/‖V_i‖)·(G_i − ∇g_i·v̂_i) = G_i − ∇g_i·v̂_i   (Eq. 3, right: the normalised gradient)
//   every T steps: refresh the projector from ∇V;  R = down(∇V)
//   GaLore's Adam core on R (galore.h): V' = W − s_t·α·up(N)
//   Adam on ∇g with its own moments [m, 1] (same β, ε placement, bias correction): g' = g − s_t·N_g
//   W ← g'·V'/‖V'‖_row;   W ← W − η·λ·W   (decay after the update, as GaLore; = decaying g and V)
// Rows with g_i = 0 (a zero-initialised LoRA B, say) have no direction: they take W_i ← V'_i.
// Differences from LowRankWeightNormAdamW: no copy of V (V is W itself, rescaled to ‖V_i‖ = g_i
// at every step), so the extra state is the m-vector of magnitude moments; the code resets g to
// ‖v‖ at every step (the learned magnitude lived one step), here it persists in W; the code
// omits the (I − v̂v̂ᵀ) term of ∇V, option orthogonal_grad = false reproduces that (∇V = G).
// Only the direction's moments are 8-bit with state_bits = 8 (the magnitude's are m floats).
// Defaults: GaLore's benchmark settings (r = 128, T = 200, α = 0.25, ε = 1e-6, β = (0.9, 0.999),
// λ = 0).
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

// The paper's optimizer: GaLore's preset, named gradnormlorp.
LowRankConfig gradnorm_lorp_defaults();
// The weight-normalised GaLore on dense weights (weight_norm, orthogonal_grad).
LowRankConfig wn_galore_defaults();
// Registers both: gradnormlorp and wngalore.
void register_gradnorm_lorp(Registry<OptimizerMethod>& registry);

}  // namespace lowrank::optim
