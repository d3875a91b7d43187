// SoRA — Ding et al., 2023, "Sparse Low-rank Adaptation of Pre-trained Language Models", EMNLP 2023,
// arXiv:2311.11696. Official code: TsinghuaC3I/SoRA (src/lora.py, src/sparse_optimizer.py).
//
//   Δ(x) = s · B (g ⊙ A x),  A [r, in], B [out, r], gate g [r] trained,  s = α/r (α/√r rsLoRA)
// A ~ U(±1/√in) (kaiming, a = √5), B = 0, g ~ N(0, 1) (official LowRankLinear: torch.randn).
// After each optimizer step the gate takes the proximal step of the L1 penalty λ‖g‖₁:
//   g ← T_t(g),  T_t(v) = sign(v) · max(|v| − t, 0),  t = η_t · λ                (paper eq. 3)
// with η_t the step's learning rate (option sparse_lambda = λ). sparse_threshold = "constant"
// uses t = λ instead, as the official sparse_optimizer.py does (its scripts pass λ₂ = 3e-4).
// finalize() drops the ranks whose gate is 0 and folds g into B (B' = B[:, k] · g[k],
// A' = A[k], same s), a plain LoRA of rank nnz(g): save_adapter writes that as peft_type "LORA"
// with a per-module rank_pattern / alpha_pattern entry keeping s.
//
// Deviations: the gate shares the run's AdamW and learning-rate schedule with A and B (as a 1-D
// tensor it gets no weight decay, as in the official code); the official code gives it a
// separate AdamW with its own rate (sparse_lr). The official in-place thresholding
// (p[p > λ] −= λ; p[p < −λ] += λ; p[|p| < λ] = 0) also zeroes entries that land inside (−λ, λ)
// after shrinking (λ < |p| < 2λ); this file applies the soft-threshold of the paper. A slot whose gates are
// all zero keeps one rank with a zero column of B when finalized, because a LoRA file cannot hold rank 0. λ
// schedules (linear, log-linear) are not implemented. The unfinalized form (peft_type "LOWRANK_SORA", tensors
// lora_A.weight, lora_B.weight, lora_gate [r]) is read by load_adapter.
#pragma once

#include <memory>

#include "lowrank/adapt/adapter.h"
#include "lowrank/adapt/lora.h"

namespace lowrank::adapt {

class SoraAdapter final : public TrainableAdapter {
 public:
  // a [r, in], b [out, r], gate [r]; threshold_by_lr: t = lr·λ (else t = λ).
  SoraAdapter(at::Tensor a, at::Tensor b, at::Tensor gate, double scaling, double sparse_lambda,
              bool threshold_by_lr);
  std::string_view kind() const override { return "sora"; }
  nn::NamedTensors tensors() const override {
    return {{"lora_A.weight", a_}, {"lora_B.weight", b_}, {"lora_gate", gate_}};
  }
  nn::NamedTensors parameters() const override { return tensors(); }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;

  // The proximal L1 step on the gate.
  void after_step(int64_t step, double lr) override;
  // The pruned plain LoRA.
  std::shared_ptr<TrainableAdapter> finalize() const override;

  // sign(v) · max(|v| − t, 0), elementwise.
  static at::Tensor soft_threshold(const at::Tensor& v, double t);

  int64_t rank() const { return a_.size(0); }
  // Gates that are exactly zero are pruned by finalize().
  int64_t active_ranks() const;
  double scaling() const { return scaling_; }
  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }
  const at::Tensor& gate() const { return gate_; }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  at::Tensor a_, b_, gate_;
  double scaling_;
  double lambda_;
  bool threshold_by_lr_;
};

}  // namespace lowrank::adapt
