// Trained Rank Pruning (TRP) — Xu, Li, Zhang, Wang, Zhang, Xu, Lin & Zhang, 2019/2020, "Trained
// Rank Pruning for Efficient Deep Neural Networks" (IJCAI 2020), arXiv:1812.02402.
// Implements, on the dense weight W [out, in] of each target slot (y = x Wᵀ + b):
// - Nuclear-norm regularisation: the objective is L(W) + λ·‖W‖_*, trained by stochastic
//   sub-gradient descent with ∂‖W‖_* ∋ U_k V_kᵀ (W = U diag(σ) Vᵀ, k = the numerical rank: the
//   singular vectors with σ_i > d·ε_float·σ_max, the minimum-norm subgradient). It is applied as an
//   explicit loss term: before each step's forward passes the gradient of W is seeded with
//   λ·U_k V_kᵀ, and the micro-batches' loss gradients accumulate onto it (so the global-norm
//   clip sees the regularised gradient, as autograd of L + λ‖W‖_* would).
// - Rank pruning: after the update of every m = `prune_every` steps, W ← U_k diag(σ_k) V_kᵀ, the
//   truncated SVD with the energy threshold e: the smallest k with Σ_{i<=k} σ_i² >= e·Σ_i σ_i²
//   (the paper's TSVD "low-rank approximation" of the trained weight). W stays stored dense, so
//   training continues in the full space and can recover rank between prunings.
// At the end W is (after the last pruning) of low rank; densify() exports it as a plain HF model
// (factoring it into two layers is left to the compression tools).
// Deviations: the paper decomposes convolutions channel- or spatial-wise; for linear layers
// that is the plain SVD used here. The paper trains with SGD + momentum; here it is the run's
// AdamW, whose moments are kept across prunings. The defaults λ = 1e-4, e = 0.98, m = 20 are
// this implementation's [unverified against the paper's tables]. A slot bias is kept and trained.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include <ATen/ATen.h>

#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class TrpOperator final : public ParameterizedOperator {
 public:
  // weight [out, in], bias [out] or undefined. Throws InvalidArgument on mismatched shapes.
  explicit TrpOperator(at::Tensor weight, at::Tensor bias = {});
  static std::shared_ptr<TrpOperator> init(const nn::LinearSlot& slot, const ParameterizationConfig& config,
                                           uint64_t seed);

  std::string_view kind() const override { return "trp"; }
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override { return at::linear(x, weight_, bias_); }
  nn::NamedTensors trainable() const override;
  at::Tensor dense_weight() const override { return weight_; }
  at::Tensor bias() const override { return bias_; }

  // Seeds W's gradient with λ·∂‖W‖_* (replacing any gradient it holds).
  void seed_regularizer_grad(double nuclear_weight) const;
  // W ← its energy-threshold truncation, in place; returns the rank kept.
  int64_t prune(double energy) const;

  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_;  // [out, in], trained
  at::Tensor bias_;
};

// U_k V_kᵀ of w [m, n] (k = numerical rank): the minimum-norm subgradient of ‖w‖_*.
at::Tensor nuclear_norm_subgradient(const at::Tensor& w);
// The smallest k with Σ_{i<=k} σ_i² >= energy·Σ σ_i² (σ in descending order); 0 for σ = 0.
int64_t energy_rank(const at::Tensor& sigma, double energy);
// (U_k diag(σ_k) V_kᵀ, k) with k = energy_rank(svdvals(w), energy).
std::pair<at::Tensor, int64_t> energy_truncate(const at::Tensor& w, double energy);

void register_trp(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
