// Plain low-rank BA — the "Low-Rank" pretraining baseline of Zhao et al., 2024, "GaLore:
// Memory-Efficient LLM Training by Gradient Low-Rank Projection", arXiv:2403.03507, Table 2
// (W = BA trained from scratch, both factors trainable), as the ReLoRA code builds it
// (Guitaricet/relora, ReLoRaLinear with keep_original=False).
// Implements y = (α/r)·(x Aᵀ) Bᵀ + b, i.e. W = (α/r)·B·A with B [out, r], A [r, in].
// Init as that code: A and B both kaiming_uniform(a=√5), i.e. A ~ U(±1/√in), B ~ U(±1/√r), so
// the product is non-zero and every factor receives a gradient from the first step; the entries
// of W then have variance (α/r)²/(9·in) (smaller than the dense N(0, 0.02²) init for the usual
// α/r ≤ 1, as in the reference).
// Deviation: a bias of the slot (q/k/v bias of Qwen2-style models) is kept and trained; the
// reference drops it (Llama has none).
// Option `refactor_every` = K > 0 adds the weight refactorisation + momentum reset of Glentis et
// al., 2025, "Scalable Parameter and Memory Efficient Pretraining for LLM: Recipes, Insights and
// Tricks", arXiv:2505.22922 (code OptimAI-Lab/Memory_Efficient_Pretraining,
// splora_model.py::merge_and_reinit): after the update of steps K, 2K, … each slot's B·A is
// re-split through its SVD, B ← U_r·diag(√σ_r), A ← diag(√σ_r)·V_rᵀ (the product, hence the
// model, is unchanged; the factors are rebalanced), every Adam moment of the run is zeroed (the
// reference rebuilds the optimizer), and the learning rate of the next `recovery_steps` steps
// ramps linearly from 0.001× to the scheduled one (its cosine_quick_recovery scheduler;
// jagged_lr_factor with floor 0.001, schedule.h).
// Deviation: the Adam step count (bias correction) keeps running, where a rebuilt optimizer
// restarts it.
#pragma once

#include <memory>

#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class LowRankBaOperator final : public ParameterizedOperator {
 public:
  // b [out, r], a [r, in], bias [out] or undefined. Throws InvalidArgument on mismatched shapes.
  LowRankBaOperator(at::Tensor b, at::Tensor a, double scale, at::Tensor bias = {});
  // The operator for `slot` initialised as the file comment says.
  static std::shared_ptr<LowRankBaOperator> init(const nn::LinearSlot& slot,
                                                 const ParameterizationConfig& config, uint64_t seed);

  std::string_view kind() const override { return "lowrank"; }
  int64_t in_features() const override { return a_.size(1); }
  int64_t out_features() const override { return b_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors trainable() const override;
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }

  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }
  double scale() const { return scale_; }

  // B ← U_r √σ_r, A ← √σ_r V_rᵀ from the SVD of B·A (file comment); in place, without autograd.
  void refactor() const;

 private:
  at::Tensor b_;  // [out, r]
  at::Tensor a_;  // [r, in]
  double scale_;  // α/r
  at::Tensor bias_;
};

void register_lowrank_ba(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
