// FunBaT: Functional Bayesian Tucker decomposition — Fang, Yu, Wang, Li, Kirby, Zhe, 2024, "Functional
// Bayesian Tucker Decomposition for Continuous-indexed Tensor Data" (ICLR 2024), arXiv:2311.04829.
//
// An entry observed at continuous coordinates i = (i_1, …, i_K) is a Tucker product of factor
// functions:
//   y_i ~ N( vec(𝒲)ᵀ (u¹(i_1) ⊗ … ⊗ u^K(i_K)),  τ⁻¹ ),   u^k = (u^k_1, …, u^k_R),
// every factor function u^k_r ~ GP(0, σ² k_Matérn(·/ℓ)) written as a linear SDE (the state
// space, Kalman filter and RTS smoother live in kernel_methods/state_space_gp.h), vec(𝒲) ~ N(0, v I)
// and τ ~ Gamma(a₀, b₀). Inference is conditional expectation propagation: with the other
// variables at their current posteriors, each entry's likelihood is moment-matched into a Gaussian
// message on u^k(i_k), in natural parameters,
//   Λ_n = E[τ] E[a aᵀ],  η_n = E[τ] y_n E[a],   a = 𝒲_(k) ⊗_{j≠k} u^j(i_j)
// (the mode-k unfolding 𝒲_(k) at its posterior mean, E[a aᵀ] = 𝒲_(k) ⊗_{j≠k} E[u^j u^jᵀ] 𝒲_(k)ᵀ);
// the messages of the entries sharing a coordinate add up, and the chain over the sorted unique
// coordinates of mode k is filtered and smoothed with them as observations,
// which gives the factor posteriors q(u^k(t)). The core and the noise then get their closed-form
// conditional updates, z_n = ⊗_k u^k(i^n_k):
//   q(vec 𝒲) = N(μ, Σ),  Σ⁻¹ = I/v + E[τ] Σ_n E[z_n z_nᵀ],  μ = Σ E[τ] Σ_n y_n E[z_n],
//   q(τ) = Gamma(a₀ + N/2, b₀ + ½ Σ_n E[(y_n − μᵀz_n)²]).
// Messages are damped in natural parameters (factor, core and noise each with their own rate), and
// the sweep factor mode 1 … K → core → noise repeats. A new coordinate's factor value is the exact
// GP posterior there (the chain with that coordinate inserted), so predictions at unseen continuous
// indices need no refit: ŷ = μᵀ ⊗_k E[u^k(i_k)].
//
// Reference code: xuangu-fang/Functional-Bayesian-Tucker-Decomposition — model_continues_mode_tensor.py
// (Continues_Mode_Tensor_Tucker: msg_approx_U, LDS_update, post_update_U, msg_approx_gamma,
// post_update_gamma, msg_approx_tau, post_update_tau), model_LDS.py (LDS_GP: filter_predict,
// filter_update, smooth, merge), utils_continues.py (make_LDS_continues_mode_paras: the Matérn-1/2
// and 3/2 state spaces; moment_product), tucker_continues.py (the sweep order), and the defaults of
// config/config_*_Tucker.yaml (damping 0.5 / 0.9 / 0.6 for factors / core / noise, a₀ = b₀ = 1).
//
// Deviations from that code, on purpose:
//  - the chain starts from N(0, P∞) rather than from a random initial mean, so the factor prior is
//    exactly the paper's zero-mean GP;
//  - the per-coordinate message is used in information form (state_space_gp.h) instead of adding an
//    extra N(0, vI) factor at each observed coordinate to make it invertible;
//  - the core has a Gaussian prior N(0, vI) (the Bayesian Tucker model's); the code has none and relies on a
//  damped 1e-3·I
//    initial message. Stored messages start at zero and the first sweep is undamped;
//  - a coordinate never observed gets the exact insertion into the chain (filtered state before,
//    smoothed state after) where the code's `merge` combines the two neighbouring smoothed states;
//  - the first sweep assumes a noise variance of a tenth of var(y) (E[τ] = 1/(0.1·var y), option
//    initial_noise_fraction) where the code starts at E[τ] = 1 whatever the scale of y; τ is
//    re-estimated after that sweep as in the code. With E[τ] = 1 on data of variance 0.28 (the
//    repro's), the first factor and core updates are dominated by the prior, the first core solve
//    comes out nearly rank 1, and the later sweeps keep it so: with undamped factor messages 14 of
//    20 seeds lost a component of a rank-2 truth (test RMSE 0.26 vs 0.035). The released code
//    escapes that more often through its random initial chain means (which change the zero-mean
//    prior), and on this problem (one entry per coordinate) its per-coordinate N(0, vI) factor
//    pulls every factor to 0 (test RMSE ≈ 0.52 on five seeds, the prediction ≈ 0).
// The multilinear message uses the core's posterior mean only, and the noise update likewise, as
// the code does.
//
// Registered as `funbat`: x [n, K] holds the K continuous coordinates of each entry, y [n] its value.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// The batched Kronecker product of per-entry factor vectors: factors[k] [n, R_k] → [n, Π R_k],
// the first factor's index the slowest (row-major vec of the outer product).
at::Tensor kron_rows(std::span<const at::Tensor> factors);
// The same for per-entry matrices: [n, R_k, R_k] → [n, Π R_k, Π R_k].
at::Tensor kron_blocks(std::span<const at::Tensor> blocks);

// The conditional core posterior given the factor posteriors at each entry: means[k] [n, R],
// covariances[k] [n, R, R], targets y [n], the noise precision E[τ] and the prior variance v.
// Returns (μ [R^K], Σ [R^K, R^K]) of the formula above (undamped).
std::pair<at::Tensor, at::Tensor> funbat_core_posterior(std::span<const at::Tensor> means,
                                                        std::span<const at::Tensor> covariances,
                                                        const at::Tensor& y, double tau,
                                                        double prior_variance);

// The moment-matched messages of each entry to u^k(i_k): (Λ [n, R, R], η [n, R]) of the formula
// above, for core [R, …, R] (K modes) at its mean.
std::pair<at::Tensor, at::Tensor> funbat_factor_messages(std::span<const at::Tensor> means,
                                                         std::span<const at::Tensor> covariances,
                                                         const at::Tensor& core, const at::Tensor& y,
                                                         double tau, int64_t mode);

}  // namespace lowrank::kernel_methods
