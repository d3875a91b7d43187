// Kernel continual learning with task-specific kernel ridge heads, on a stored coreset (KCL) or on
// support drawn from a class-conditional generator (GKCL) —
//   Derakhshani, Zhen, Shao & Snoek, 2021, "Kernel Continual Learning", ICML, arXiv:2107.05757;
//   Derakhshani, Zhen, Shao & Snoek, 2021, "Generative Kernel Continual Learning", arXiv:2112.13410.
//
// Each task t gets its own classifier, a kernel ridge regression onto the one-hot labels of its
// support set S_t (KCL's task-specific classifier, computed in closed form instead of trained):
//   α_t = (K(S_t, S_t) + λI)⁻¹ Y_t,        f_t(x) = K(x, S_t) α_t,        ŷ = argmax_c f_t(x)_c,
// with Y_t [s, c] the one-hot labels of S_t over the task's c classes. A later task never touches
// an earlier task's (S_t, α_t), which is why the method does not forget: it only has to keep S_t.
//   - KCL keeps S_t as a coreset: a uniformly random subset of each class of the task's training
//     data (`per_class` points per class, all of a class when it has fewer).
//   - GKCL replaces the coreset by a class-conditional generator and draws S_t from it when the head
//     is needed, so the memory is the generator's parameters, not stored examples. Here the
//     generator of class c is a Gaussian N(μ_c, Σ_c) fitted by maximum likelihood (unbiased sample
//     covariance) to the class's training points, with Σ_c either
//       diagonal:  diag(σ²_c1 .. σ²_cd)                                   (2d floats per class), or
//       low-rank:  W Wᵀ + σ²I, the probabilistic PCA solution of Tipping & Bishop (1999):
//                  W = U_r (Λ_r − σ²I)^{1/2}, σ² = the mean of the d − r discarded eigenvalues
//                  of the sample covariance                               (d(r + 1) + 1 floats),
//     and S_t = `per_class` draws μ_c + W z + σ ⊙ ε (z, ε standard normal) per class, from a
//     generator seeded by (seed, task), so a head is the same every time it is rebuilt.
//
// Reference code: mmderakhshani/KCL (the authors' Kernel Continual Learning repository),
// stable_sgd/main_rbf.py (alpha = inverse(K_SS + (|λ_t| + 0.01) I) · one_hot(Y_S), pred =
// γ_t · K_xSᵀ alpha + β_t with an RBF kernel on the backbone's features) and stable_sgd/data_utils.py
// (coreset_selection: per class a random permutation, the first coreset_size / classes kept);
// stable_sgd/main_kernel_vae.py outlines the generative variant (each earlier task's support made by
// generate_coreset(vae, task) when it is evaluated; that function and train_vae are empty stubs in
// the released snapshot, so the generator here follows the paper's description only).
//
// Deviations (named):
//   - No learned backbone: the kernel acts on the inputs (or features the caller computed). The
//     papers train a shared feature extractor with the heads (and GKCL a supervised-contrastive
//     term); with fixed features the heads are exactly independent across tasks.
//   - λ is an option, not learned per task; the scale γ_t and offset β_t of the reference code are
//     left out (they do not change the argmax of a one-hot KRR head with γ_t > 0).
//   - The generator is a per-class Gaussian (diagonal or PPCA), not the paper's conditional VAE with
//     a learnable mixture prior.
//   - A coreset point is not removed from the task's training data (the reference code trains the
//     backbone on the rest; without a backbone there is nothing to train).
//
// Task-incremental use: the task id is the FIRST COLUMN of x, both for fit and predict (a
// non-negative integer); the remaining columns are the inputs. Labels y are integers; a task may
// have any number of classes. predict(x) returns the label of x's row under the head of the task
// named in its first column; a task id that was not fitted is an error naming it.
#pragma once

#include <cstdint>
#include <string_view>

#include <ATen/ATen.h>

#include "lowrank/kernel_methods/gram.h"

namespace lowrank::kernel_methods {

// One task's classifier.
struct KrrHead {
  at::Tensor support;  // S [s, d]
  at::Tensor classes;  // [c] the task's labels, ascending (float64 integers)
  at::Tensor alpha;    // [s, c] = (K(S, S) + λI)⁻¹ Y
  double jitter = 0;   // added on top of λ by the Cholesky (krr.h), 0 normally
};

// The head on support [s, d] with integer labels [s]. λ ≥ 0 (0 interpolates the support).
KrrHead krr_head(const KernelSpec& kernel, const at::Tensor& support, const at::Tensor& labels, double ridge);
// f(x) = K(x, S) α: [m, c] scores, one column per class of the head.
at::Tensor krr_head_scores(const KernelSpec& kernel, const KrrHead& head, const at::Tensor& x);
// The argmax class of each row: [m] float64 labels.
at::Tensor krr_head_predict(const KernelSpec& kernel, const KrrHead& head, const at::Tensor& x);

// KCL's coreset: for each label (ascending), `per_class` row indices of that label drawn uniformly
// without replacement (all of them when the label has fewer). labels [n] integers; returns int64.
at::Tensor coreset_indices(const at::Tensor& labels, int64_t per_class, at::Generator& generator);

enum class Covariance { kDiagonal, kLowRank };
// "diagonal" or "low_rank"; InvalidArgument naming `what` otherwise.
Covariance covariance_from_name(std::string_view name, std::string_view what);

// A class-conditional Gaussian N(mean, factor factorᵀ + diag(noise²)).
struct ClassGaussian {
  at::Tensor mean;    // [d]
  at::Tensor factor;  // [d, r] W (r = 0 for the diagonal model)
  at::Tensor noise;   // [d] per-coordinate σ (diagonal) or [1] the isotropic σ (low-rank)
};

// The maximum-likelihood fit to x [n, d] (n ≥ 2) with the unbiased sample covariance; rank is used
// by the low-rank model only and must lie in [1, d).
ClassGaussian fit_class_gaussian(const at::Tensor& x, Covariance covariance, int64_t rank);
// count draws [count, d].
at::Tensor sample_class_gaussian(const ClassGaussian& gaussian, int64_t count, at::Generator& generator);
// W Wᵀ + diag(noise²) [d, d].
at::Tensor class_gaussian_covariance(const ClassGaussian& gaussian);
// The floats a generator keeps: mean, factor and noise.
int64_t stored_floats(const ClassGaussian& gaussian);

// The generator of task `task` under `seed`: coreset draws and generated support of one task do not
// depend on which other tasks were fitted.
at::Generator task_generator(uint64_t seed, int64_t task);

}  // namespace lowrank::kernel_methods
