// Trained Rank Pruning (TRP) — Xu, Li, Zhang, Wang, Zhang, Xu, Lin & Zhang, 2019/2020, "Trained
// Rank Pruning for Efficient Deep Neural Networks" (IJCAI 2020), arXiv:1812.02402.
// Implements, on the dense weight W [out, in] of each target slot (y = x Wᵀ + b), the training
// iteration of the paper's Fig. 1(b) / Alg. 1 as the authors' code runs it (yuhuixu1993/
// Trained-Rank-Pruning, cifar-TRP.py: low_rank_approx every `--decouple-period` batches):
// - Every m = `prune_every` steps, before the step's forward passes (steps 0, m, 2m, ...):
//   W = U diag(σ) Vᵀ, k = the smallest k with Σ_{i<=k} σ_i² >= e·Σ_i σ_i² (energy threshold e),
//   and W ← U_k diag(σ_k) V_kᵀ: the step's forward, backward and update run on the truncated
//   weight, whose update is written back to the dense W, so training continues in the full space
//   and rank can grow back between truncations.
// - Nuclear-norm regularisation on the same steps: L(W) + λ·‖W‖_* by stochastic sub-gradient
//   descent, ∂‖W‖_* ∋ U_k V_kᵀ of the truncated W (its minimum-norm subgradient). W's gradient is
//   seeded with λ·U_k V_kᵀ before the forward passes and the micro-batches' loss gradients
//   accumulate onto it, so the global-norm clip sees the regularised gradient.
// Defaults from that code: λ = 3e-4 (its README's `--nuclear-weight 0.0003`), e = 0.9
// (`EnergyThreshold(0.9)` in training), m = 5 (`train_TPR.sh`: `-dp 5`).
// densify() exports W as a plain HF model; the compression tools factor it (the authors cut the
// final model by a singular-value threshold, without retraining).
// Deviations: the paper decomposes convolutions channel- or spatial-wise; for linear layers that
// is the plain SVD used here. The paper trains with SGD + momentum; here it is the run's AdamW,
// whose moments are kept across truncations. A slot bias is kept and trained.
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/ATen.h>

#include "lowrank/linalg/rank.h"
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

  // One TRP step's preparation: W ← its energy-threshold truncation U_k diag(σ_k) V_kᵀ, in place,
  // and, for λ > 0, W's gradient ← λ·U_k V_kᵀ (replacing any it holds). Returns k.
  int64_t truncate_and_regularize(double energy, double nuclear_weight) const;

  const at::Tensor& weight() const { return weight_; }

 private:
  at::Tensor weight_;  // [out, in], trained
  at::Tensor bias_;
};

// U_k V_kᵀ of w [m, n] (k = numerical rank): the minimum-norm subgradient of ‖w‖_*.
at::Tensor nuclear_norm_subgradient(const at::Tensor& w);
// TRP's threshold is linalg's energy rule: the smallest k with Σ_{i<=k} σ_i² >= e·Σ σ_i².
using linalg::energy_rank;
// The thin SVD of w cut to k = energy_rank(σ, energy): U_k [m, k], σ_k [k], V_kᵀ [k, n].
struct TruncatedSvd {
  at::Tensor u, s, vh;
  int64_t rank() const { return s.size(0); }
  at::Tensor product() const { return at::matmul(u * s, vh); }  // U_k diag(σ_k) V_kᵀ
};
TruncatedSvd energy_truncated_svd(const at::Tensor& w, double energy);

void register_trp(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
