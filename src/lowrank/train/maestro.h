// Maestro — Horváth, Laskaridis, Rajput & Wang, 2024, "Maestro: Uncovering Low-Rank Structures
// via Trainable Decomposition", ICML 2024, arXiv:2308.14929.
// Implements the low-rank ordered decomposition (LOD) of each target slot, W = B·A = Σ_i b_i a_iᵀ
// (B [out, r], A [r, in], no scale), trained with ordered dropout over the rank:
//   y = (x A[:b]ᵀ) B[:, :b]ᵀ + b_bias,  b ~ U{1, …, r} drawn before each optimizer step,
// so that the leading components are trained by every step and the i-th only when b >= i: the
// components come out ordered by importance and the trained model can be cut to any rank b
// (truncate(b) keeps B[:, :b], A[:b]) with the function of training at b. Outside training
// (after each step, at export) the operator runs at the full rank r.
// Init: the truncated SVD of the slot's dense init, B = U_r·diag(√σ_r), A = diag(√σ_r)·V_rᵀ
// (Maestro's decomposition of given weights), so the order starts as the spectral order.
// The components beyond b get no gradient in a step and are left bitwise untouched by it: they
// are restored after the update, so neither AdamW's momentum nor its weight decay moves them
// (their Adam moments still decay by β1, β2 that step).
// Draws are counter-based (seed, step, slot), so a resumed run repeats them.
// Deviations: b is drawn independently per slot from the uniform distribution (the paper's
// p_b); the paper's group-lasso penalty on the components and its progressive shrinking (pruning
// trailing components whose norm falls below a threshold during training) are not implemented —
// ranks are cut after training with truncate(b). A slot bias is kept and trained.
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/ATen.h>

#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class MaestroOperator final : public ParameterizedOperator {
 public:
  // b [out, r], a [r, in], bias [out] or undefined. Throws InvalidArgument on mismatched shapes.
  MaestroOperator(at::Tensor b, at::Tensor a, at::Tensor bias = {});
  static std::shared_ptr<MaestroOperator> init(const nn::LinearSlot& slot,
                                               const ParameterizationConfig& config, uint64_t seed);

  std::string_view kind() const override { return "maestro"; }
  int64_t in_features() const override { return a_.size(1); }
  int64_t out_features() const override { return b_.size(0); }
  // At the active rank (r unless a step set it).
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors trainable() const override;
  // B[:, :b]·A[:b] at the active rank.
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }

  int64_t rank() const { return a_.size(0); }
  int64_t active_rank() const { return active_; }
  // Sets the cut-off b in [1, r] and keeps a copy of the components beyond it. Not thread-safe
  // with forward.
  void begin_step(int64_t b) const;
  // Restores the components beyond the cut-off (bitwise) and returns to the full rank.
  void end_step() const;
  // A new operator holding copies of the first b components.
  std::shared_ptr<MaestroOperator> truncate(int64_t b) const;

  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }

 private:
  at::Tensor b_;  // [out, r]
  at::Tensor a_;  // [r, in]
  at::Tensor bias_;
  mutable int64_t active_;     // cut-off b of the current step
  mutable at::Tensor tail_b_;  // B[:, b:] saved by begin_step
  mutable at::Tensor tail_a_;  // A[b:]
};

// The cut-off of `slot` at 0-based `step`: uniform in [1, r], from (seed, step, slot).
int64_t maestro_cutoff(uint64_t seed, int64_t step, uint64_t slot, int64_t r);

void register_maestro(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
