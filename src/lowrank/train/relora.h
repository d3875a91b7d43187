// ReLoRA — Lialin et al., 2023, "ReLoRA: High-Rank Training Through Low-Rank Updates",
// arXiv:2307.05695 (code: Guitaricet/relora, peft_pretraining/relora.py, training_utils.py).
// Implements W = W0 + (α/r)·B·A with W0 frozen, B [out, r], A [r, in] trained:
//   y = x W0ᵀ + b + (α/r)·(x Aᵀ) Bᵀ.
// Init (ReLoRaLinear): W0 = the slot's dense init, A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0.
// Every T = reset_every optimizer steps (after the update of steps T, 2T, ...):
//   merge and re-init   W0 ← W0 + (α/r)·B·A;  A ~ U(±1/√in) (freshly drawn);  B ← 0
//                       (the function is unchanged: B = 0 after the restart);
//   partial optimizer reset: the prune_ratio fraction of smallest-magnitude entries of A's and
//                       B's Adam moments is zeroed (the paper's magnitude pruning, §3, 99%
//                       [unverified: the value is from the paper's text as summarised, not
//                       checked against its tables]; prune_ratio 1 = the code's full reset
//                       reset_optimizer_on_relora); the Adam step count keeps running;
//   jagged schedule:    for the restart_warmup steps after each restart the scheduled LR is
//                       multiplied by j/restart_warmup (j = steps since the restart, 0-based),
//                       as training_utils.py's cosine_restarts (jagged_lr_factor, schedule.h).
// Embeddings, norms and lm_head are trained densely throughout (as the reference).
// Deviations: the paper's full-rank warm start (a first stretch of ordinary training before the
// first low-rank cycle) is left to the user (no built-in phase); the re-warmup multiplies the
// current cosine LR instead of the cosine value at the restart (a negligible difference over
// restart_warmup steps); the magnitude threshold is the k-th smallest |m| (kthvalue) rather
// than torch.quantile's interpolated quantile; a slot bias is kept and trained.
#pragma once

#include <memory>

#include <ATen/ATen.h>

#include "lowrank/train/parameterization.h"

namespace lowrank::train {

class ReloraOperator final : public ParameterizedOperator {
 public:
  // w0 [out, in] (frozen), b [out, r], a [r, in], bias [out] or undefined.
  ReloraOperator(at::Tensor w0, at::Tensor b, at::Tensor a, double scale, at::Tensor bias = {});
  static std::shared_ptr<ReloraOperator> init(const nn::LinearSlot& slot,
                                              const ParameterizationConfig& config, uint64_t seed);

  std::string_view kind() const override { return "relora"; }
  int64_t in_features() const override { return w0_.size(1); }
  int64_t out_features() const override { return w0_.size(0); }
  at::Tensor forward(const at::Tensor& x) const override;
  nn::NamedTensors trainable() const override;
  nn::NamedTensors frozen() const override { return {{"weight", w0_}}; }
  at::Tensor dense_weight() const override;
  at::Tensor bias() const override { return bias_; }

  // W0 ← W0 + (α/r)·B·A, then A ~ U(±1/√in) from `seed`, B ← 0; in place (the optimizer keeps
  // its handles), without autograd. Not thread-safe with forward.
  void merge_and_reinit(uint64_t seed) const;

  const at::Tensor& w0() const { return w0_; }
  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }
  double scale() const { return scale_; }

 private:
  at::Tensor w0_;  // [out, in], frozen
  at::Tensor b_;   // [out, r]
  at::Tensor a_;   // [r, in]
  double scale_;   // α/r
  at::Tensor bias_;
};

void register_relora(Registry<ParameterizationMethod>& registry);

}  // namespace lowrank::train
