// SoRA — Ding et al., 2023, "Sparse Low-rank Adaptation of Pre-trained Language Models", EMNLP 2023,
// arXiv:2311.11696. Official code: TsinghuaC3I/SoRA (src/lora.py, src/sparse_optimizer.py).
//
//   Δ(x) = s · B (g ⊙ A x),  A [r, in], B [out, r], gate g [r] trained,  s = α/r (α/√r rsLoRA)
// A ~ U(±1/√in) (kaiming, a = √5), B = 0, g ~ N(0, 1) (official LowRankLinear: torch.randn).
// After each optimizer step the gate takes the proximal step of an L1 penalty:
//   g ← T_t(g),  T_t(v) = sign(v) · max(|v| − t, 0)
// with, by default (sparse_threshold = "constant"), the same t = λ at every step, as the
// official code does: src/sparse_optimizer.py, SparseAdamW.step thresholds the gates by its
// sparse_lambda right after their AdamW update, and run_glue.py builds it with
// sparse_lambda = --sparse_lambda_2 (default 1e-3, which is this file's default λ; the
// no-schedule script passes 3e-4). sparse_threshold = "lr" uses t = η_t · λ instead, η_t the
// step's learning rate: the proximal gradient step of the paper's eq. 3 (and of the official
// src/sparse_optimizer_multiply_lr.py). Option sparse_lambda = λ.
// λ schedule: the official default is none (run_glue.py --lambda_schedule None: λ stays
// constant). Its linear / log_linear / exp_linear schedules step λ between successive whole
// trainings (run_glue.py's loop after training, SparseAdamW.step_lambda), a sweep for the
// sparsity-vs-quality curve, not a schedule within one run; they are not implemented here.
// finalize() drops the ranks whose gate is 0 and folds g into B (B' = B[:, k] · g[k],
// A' = A[k], same s), a plain LoRA of rank nnz(g): save_adapter writes that as peft_type "LORA"
// with a per-module rank_pattern / alpha_pattern entry keeping s.
//
// Deviations:
// - Optimizer. The official gates have an optimizer of their own (SparseAdamW: transformers'
//   AdamW, ε 1e-6, no weight decay, rate --sparse_lr, which defaults to the run's learning rate,
//   with a linear warmup/decay schedule of its own). Here the gate stays in the run's optimizer
//   and schedule and is thresholded in after_step, right after that optimizer's update. AdamW is
//   elementwise, so with the official default sparse_lr = lr this is the same update except for
//   ε (the run's) and the schedule's shape (the run's); as a 1-D tensor the gate gets no weight
//   decay, as in the official code. A separate rate (sparse_lr) is not offered.
// - Loss term. The official trainer also adds --sparse_lambda · Σ|g| / n_gates to the loss
//   (src/trainer.py, compute_loss; n_gates = all gate entries of the model, default
//   sparse_lambda 1e-3). Its gradient is sparse_lambda / n_gates · sign(g) per gate entry, which
//   a layer cannot compute without the model-wide n_gates; it is not added.
// - Thresholding. The official in-place update (p[p > λ] −= λ; p[p < −λ] += λ; p[|p| < λ] = 0)
//   also zeroes entries that land inside (−λ, λ) after shrinking (λ < |p| < 2λ); this file
//   applies the exact soft threshold T_λ of the paper.
// - Rank 0. A slot whose gates are all zero keeps one rank with a zero column of B when
//   finalized, because a LoRA file cannot hold rank 0.
// The unfinalized form (peft_type "LOWRANK_SORA", tensors lora_A.weight, lora_B.weight,
// lora_gate [r]) is read by load_adapter.
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
