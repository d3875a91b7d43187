// Deep kernel machines (DKM) — Yang, Robeyns, Milsom, Anson, Schoots & Aitchison, "A theory of
// representation learning gives a deep generalisation of kernel methods", ICML 2023,
// arXiv:2108.13097.
//
// A DKM learns one Gram matrix per layer. With G₀ = XXᵀ/d₀ and a kernel K(·) that acts on Gram
// matrices, it maximises the deep kernel machine objective (the paper's eq. for L(G₁, …, G_L))
//   L(G₁..G_L) = log P(Y | G_L) − Σ_l ν_l KL(N(0, G_l) ‖ N(0, K(G_{l−1}))),
//   KL(N(0, G) ‖ N(0, K)) = ½ [tr(K⁻¹G) − P + log|K| − log|G|]        (zero-mean Gaussians, P×P),
//   log P(Y | G_L) = Σ_λ log N(y_λ; 0, K(G_L) + σ²I)                    (regression, one term per
//                                                                        output column λ).
// ν_l = N_l / N_{L+1} weighs representation learning against the prior: ν → ∞ pins every G_l to
// K(G_{l−1}), the NNGP. Kernels on a Gram matrix G (diagonal g):
//   arccos1   the arc-cosine ReLU kernel κ₁ of gram.h applied to G's inner products
//             (arccos_from_gram), whose diagonal is g itself;
//   rbf       exp(−D/(2h²)) with D_ij = g_i + g_j − 2G_ij.
// G_l = V_l V_lᵀ with V_l lower triangular with a positive (exponentiated) diagonal, stored as
// √P·V_l as the reference code does so that one Adam step size suits every P; the fit starts at
// the NNGP (G_l = K(G_{l−1}), every KL 0) and runs Adam on L.
//
// Sparse DKM (the reference code's GramLayer; inducing = P_i > 0): only the inducing Grams G_ii
// (P_i × P_i) are learned; the training points ("t") follow the Gaussian conditional
//   G_ti = K_ti K_ii⁻¹ G_ii,
//   g_t  = k_t − diag(K_ti K_ii⁻¹ K_it) + diag(K_ti K_ii⁻¹ G_ii K_ii⁻¹ K_it),
// with the per-layer term −ν KL(N(0, G_ii) ‖ N(0, K_ii)), O(N P_i²) per layer. The output layer is
// a sparse GP on the last kernel: the code's variational output q(f_i) = N(μ, A) with its optimum
// for the Gaussian likelihood taken in closed form (Titsias, 2009, the collapsed bound)
//   log N(y; 0, Q + σ²I) − tr(K_tt − Q)/(2σ²),   Q = K_ti K_ii⁻¹ K_it.
// With every training point inducing, G_ti = G_ii, g_t = diag G_ii and Q = K: the full DKM.
// Prediction (full and sparse alike): test points are conditioned on the learned inducing Grams by
// the same G_ti / g_t formulas layer by layer (for the full DKM the training points are the
// inducing points), and the output is the Gaussian predictive of the last layer's (sparse) GP:
//   mean = K_ti α,   variance = k_t − diag(K_ti W K_it) + σ²,
// full: α = (K + σ²I)⁻¹y, W = (K + σ²I)⁻¹; sparse: Σ = K_ii + σ⁻²K_it K_ti, α = σ⁻²Σ⁻¹K_it y,
// W = K_ii⁻¹ − Σ⁻¹.
//
// Reference code: edwardmilsom/convdkmpaper, dkm/dkm/layer.py (GramLayerStableCholesky = GramLayer:
// the Cholesky parametrisation with exp diagonal scaled by √P, the NNGP initialisation from
// chol(K_ii), the G_ti / g_t conditional, the KL term, a jitter of 0.1·I added to G_ii for the
// propagation only), dkm/dkm/kernels.py (ReluKernel, SqExpKernel on Grams, the diagonal jitter of
// K_ii and k_t), dkm/dkm/output.py (the variational output layer).
// Deviations (named):
//   - output layer: the optimal q(μ, A) in closed form (collapsed bound) instead of learning μ, A
//     by Monte-Carlo gradients; it is the maximum over (μ, A) of the code's output objective;
//   - the exact KL, not the code's default second-order "Taylor" surrogate ½‖G⁻¹K − I‖²_F;
//   - the gram_jitter (the code's 0.1) defaults to 0, so that the NNGP initialisation is exact;
//   - arccos1 without the code's learned bias and weight variances (σ_w² = 2, no bias);
//   - inducing inputs are a seeded random subset of the training inputs, fixed (the code learns
//     them); targets are standardised (mean, standard deviation) for the fit and mapped back;
//   - the noise variance σ² is learned by Adam with the Grams (log-parametrised), or fixed.
// The NNGP itself (ν = ∞) is the option nngp = true: the Grams stay at K(G_{l−1}) and only σ²
// is fitted (type-II maximum likelihood).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

struct DkmOptions {
  int64_t layers = 2;              // L, learned Gram layers (>= 1)
  double nu = 1.0;                 // ν (> 0), the same for every layer
  std::string kernel = "arccos1";  // arccos1 | rbf
  double bandwidth = 1.0;          // h of rbf
  int64_t inducing = 0;            // P_i; 0 (or >= n) = the full DKM
  int64_t steps = 200;             // Adam steps
  double lr = 0.01;                // Adam step size
  double noise = 0.1;              // σ² (initial value when learned)
  bool learn_noise = true;         // fit σ² with the Grams
  bool nngp = false;               // ν = ∞: Grams held at the NNGP
  double kernel_jitter = 1e-4;     // added to K_ii and k_t after each kernel (the code's ε)
  double gram_jitter = 0.0;        // added to G_ii in the propagation only (the code's 0.1)
};

// Throws InvalidArgument naming the option and its value.
void validate(const DkmOptions& options);

// A Gram matrix over inducing points (ii, [P, P]), its cross block with other points (ti, [n, P])
// and those points' diagonal (t, [n]). For the full DKM, ti = ii and t = diag(ii).
struct GramBlocks {
  at::Tensor ii, ti, t;
};

// KL(N(0, G) ‖ N(0, K)) for P×P symmetric positive definite G, K (differentiable in both).
at::Tensor dkm_gaussian_kl(const at::Tensor& g, const at::Tensor& k);

// The kernel on Gram blocks, with kernel_jitter on ii and t.
GramBlocks dkm_kernel(const GramBlocks& g, const DkmOptions& options);
// The conditional of the points given the inducing Gram g_ii (gram_jitter added to it):
// G_ti = K_ti K_ii⁻¹ G_ii, g_t as in the header comment.
GramBlocks dkm_propagate(const GramBlocks& k, const at::Tensor& g_ii, double gram_jitter);

// The objective's terms for inputs x [n, d], standardised targets y [n, k], inducing inputs z
// [P, d] (for the full DKM z = x and P = n) and the learned Grams (one [P, P] per layer).
// `sparse` selects the conditional and the collapsed output bound; with z = x and sparse = false
// every block is the full one.
struct DkmTerms {
  at::Tensor log_likelihood;   // log P(Y | G_L) (the collapsed bound when sparse)
  std::vector<at::Tensor> kl;  // KL of each layer
  at::Tensor objective;        // log_likelihood − ν Σ kl
};
DkmTerms dkm_terms(const at::Tensor& x, const at::Tensor& y, const at::Tensor& z,
                   const std::vector<at::Tensor>& grams, const at::Tensor& noise, bool sparse,
                   const DkmOptions& options);

// The NNGP Grams on z: G_l = K(G_{l−1}) from G₀ = zzᵀ/d₀ (the initialisation).
std::vector<at::Tensor> dkm_nngp_grams(const at::Tensor& z, const DkmOptions& options);

struct DkmModel {
  at::Tensor inducing;            // [P, d] (the training inputs for the full DKM)
  std::vector<at::Tensor> grams;  // [P, P] per layer
  at::Tensor alpha, w;            // predictive: mean = K_ti α, variance = k_t − diag(K_ti W K_it) + σ²
  double noise = 0.1;             // σ² (standardised units)
  at::Tensor y_mean, y_scale;     // [k] standardisation of the targets
  double objective = 0;           // L at the end of the fit
  double log_likelihood = 0;
  std::vector<double> kl;
};

// Fits x [n, d], y [n] or [n, k].
DkmModel dkm_fit(const at::Tensor& x, const at::Tensor& y, const DkmOptions& options, uint64_t seed);

struct DkmPrediction {
  at::Tensor mean, variance;  // [m, k] in the targets' units (variance includes σ²)
};
DkmPrediction dkm_predict(const DkmModel& model, const at::Tensor& x, const DkmOptions& options);

}  // namespace lowrank::kernel_methods
