// MLC: manifold linearizing and clustering by maximal coding rate reduction with a doubly
// stochastic membership — Ding, Tong, Chan, Dai, Ma & Haeffele, 2023, "Unsupervised Manifold
// Linearizing and Clustering", ICCV 2023, arXiv:2301.01805; the coding rates of MCR² (Yu, Chan,
// You, Song & Ma, 2020, NeurIPS, arXiv:2006.08558).
//
// Features Z = [z_1..z_n] ∈ R^{d×n} on the unit sphere (here stored as rows, [n, d]). With the
// quantisation error ε:
//   R(Z)      = ½ logdet(I_d + d/(nε²) Z Zᵀ)                               (the total coding rate)
//   R_c(Z, Γ) = 1/(2n) Σ_{j=1}^n logdet(I_d + d/ε² Z Diag(Γ_j) Zᵀ)          (MLC's eq. for R_c)
// where Γ ∈ R^{n×n} is doubly stochastic (Γ ≥ 0, Γ1 = Γᵀ1 = 1) and Γ_j its j-th row. For Γ
// block-diagonal with blocks 11ᵀ/n_k this is MCR²'s Σ_k n_k/(2n) logdet(I + d/(n_k ε²) Z_k Z_kᵀ);
// Γ = 11ᵀ/n gives R_c = R; Γ = I gives ½ log(1 + d/ε²) for unit features.
// Constants: the ½ factors follow MCR² (R = ½logdet); issue 22 writes both rates without them,
// i.e. twice these (ΔR is scaled by 2, the optimum is the same).
// MLC maximises ΔR = R(Z_θ) − R_c(Z_θ, Γ_φ) over the feature head θ and the cluster head φ, with
//   Γ_φ = n · Sinkhorn_η(C_φ C_φᵀ),
// the entropic optimal transport plan between uniform marginals 1/n for the similarity C Cᵀ of
// the unit-norm cluster-head outputs (cost −CCᵀ, entropic regulariser η; linalg/sinkhorn in the
// log domain, unrolled so that gradients flow through it). Training starts from the total coding
// rate (TCR) initialisation: the feature head first maximises R(Z) alone, and the cluster head
// starts as a copy of it (so Γ starts as Sinkhorn_η(ZZᵀ)). The clusters are the spectral
// clustering of Γ (Ng–Jordan–Weiss: the k leading eigenvectors of D^{−½} ½(Γ + Γᵀ) D^{−½},
// rows normalised, k-means).
//
// Deviations (named): the paper's heads sit on a ResNet/CLIP backbone trained with data
// augmentations (its TCR stage adds an augmentation-invariance term); here both heads are linear
// maps x ↦ normalize(W x) on fixed inputs, without augmentations, trained by Adam. predict()
// assigns new points to the nearest cluster subspace in feature space (the top singular vectors
// of each fitted cluster's features), the classifier MCR² uses on its features.
// The authors' code (github.com/tianjiaoding/mlc, named in the paper) has no snapshot here: the
// constants follow the paper's equations and MCR²'s ½ convention, unchecked against that code.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::kernel_methods {

// R(Z) for z [n, d] (rows are the features); differentiable. ε² > 0.
at::Tensor coding_rate(const at::Tensor& z, double epsilon_sq);
// R_c(Z, Γ) for z [n, d] and a membership gamma [n, n] (row j = Γ_j); differentiable.
at::Tensor clustered_coding_rate(const at::Tensor& z, const at::Tensor& gamma, double epsilon_sq);
// Γ = n · Sinkhorn_η(CCᵀ) for unit-norm rows c [n, d_c], running exactly `iterations` log-domain
// Sinkhorn iterations; differentiable.
at::Tensor doubly_stochastic_membership(const at::Tensor& c, double eta, int64_t iterations);
// Spectral clustering of a nonnegative affinity [n, n] into k clusters: labels [n] int64.
at::Tensor spectral_clustering(const at::Tensor& affinity, int64_t clusters, at::Generator& generator);

struct Mcr2Options {
  int64_t clusters = 2;              // k
  int64_t feature_dim = 16;          // d of both heads
  double epsilon_sq = 0.5;           // ε²
  double eta = 0.1;                  // Sinkhorn's entropic regulariser
  int64_t sinkhorn_iterations = 30;  // unrolled per step
  int64_t tcr_steps = 100;           // TCR initialisation steps
  int64_t steps = 200;               // MLC steps
  double learning_rate = 0.01;       // Adam
  int64_t subspace_rank = 0;         // rank of predict()'s cluster subspaces (0: max(1, d/k))
};

struct Mcr2Fit {
  at::Tensor feature_head;             // W_f [d, D]
  at::Tensor cluster_head;             // W_c [d, D]
  at::Tensor membership;               // Γ [n, n] at the end
  at::Tensor labels;                   // [n] int64, spectral clustering of Γ
  at::Tensor bases;                    // [k, d, r] orthonormal bases of each cluster's features
  std::vector<double> rate_reduction;  // ΔR after each MLC step
};

// Runs TCR initialisation then MLC on x [n, D]. Throws InvalidArgument for bad options.
Mcr2Fit mcr2_fit(const at::Tensor& x, const Mcr2Options& options, at::Generator& generator);

// The unit-norm features normalize(x Wᵀ) [n, d].
at::Tensor mcr2_features(const at::Tensor& x, const at::Tensor& head);
// Nearest subspace: argmax_k ‖B_kᵀ z‖² for the features of x: [m] int64.
at::Tensor nearest_subspace(const at::Tensor& features, const at::Tensor& bases);

// Clustering accuracy under the best one-to-one matching of cluster ids to labels (brute force
// over permutations; k ≤ 10, enough for digits).
double clustering_accuracy(const at::Tensor& predicted, const at::Tensor& truth, int64_t clusters);

}  // namespace lowrank::kernel_methods
