// DyLoRA — Valipour et al., 2022, "DyLoRA: Parameter Efficient Tuning of Pre-trained Models using
// Dynamic Search-Free Low-Rank Adaptation", arXiv:2210.07558 (EACL 2023). Official code:
// huawei-noah/Efficient-NLP, DyLoRA/loralib/{layers,DyLoRA}.py.
//
// LoRA factors of the largest rank, A [r_max, in], B [out, r_max], trained so that every leading
// block works on its own. Each training step draws b ∈ {r_min, …, r_max} uniformly and uses
//   Δ(x) = (α / b) · B[:, :b] (A[:b] x)                                  (paper eq. 7)
// (α/√b with rsLoRA). Evaluation uses a chosen rank b_eval (option eval_rank, default r_max).
// The official code multiplies each truncated factor by √(r_max/b) on top of α/r_max, which is
// the same α/b; the first author confirms α/b as the intended scale (kohya-ss/sd-scripts#394).
//
// Rank sampling: b_t = r_min + splitmix64(splitmix64(seed ⊕ K) ⊕ t) mod (r_max − r_min + 1) for
// step t, so a resumed run draws the same ranks as an uninterrupted one, and every slot of one
// adapter (same seed, same r_max) uses the same b in a step, as the official model-wide set_rank.
//
// "frozen" (option, default false): the rows/columns before the b-th are detached, so a step
// trains only the b-th row of A and column of B (the official dynamic.forward with
// frozen=True). Default false follows the official set_rank default; which of the two the
// paper's reported runs used could not be checked here.
//
// Initialisation as LoRA (A ~ U(±1/√in), B = 0). Saved as LOWRANK_DYLORA with lora_A.weight /
// lora_B.weight of the full r_max, so the file can be evaluated at any rank ≤ r_max.
#pragma once

#include <cstdint>
#include <memory>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

class DyLoraAdapter final : public TrainableAdapter {
 public:
  // a [r_max, in], b [out, r_max]; ranks within [1, r_max].
  DyLoraAdapter(at::Tensor a, at::Tensor b, double alpha, bool rslora, int64_t min_rank, int64_t eval_rank,
                bool frozen, uint64_t seed);
  std::string_view kind() const override { return "dylora"; }
  nn::NamedTensors tensors() const override { return {{"lora_A.weight", a_}, {"lora_B.weight", b_}}; }
  nn::NamedTensors parameters() const override { return tensors(); }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;

  // step >= 0: the step's sampled rank; step < 0: the evaluation rank.
  void before_step(int64_t step) override;

  // The rank the sampler gives step `step` for this configuration (pure function).
  static int64_t sample_rank(uint64_t seed, int64_t step, int64_t min_rank, int64_t max_rank);
  // α/b, or α/√b with rsLoRA.
  double scaling_at(int64_t rank) const;

  int64_t max_rank() const { return a_.size(0); }
  int64_t current_rank() const { return rank_; }
  int64_t eval_rank() const { return eval_rank_; }
  // Sets the evaluation rank (clamped to [1, r_max]) and switches to it.
  void set_eval_rank(int64_t rank);
  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  // The factors truncated to the current rank (the leading rows detached in frozen training).
  std::pair<at::Tensor, at::Tensor> active() const;

  at::Tensor a_, b_;
  double alpha_;
  bool rslora_;
  int64_t min_rank_;
  int64_t eval_rank_;
  bool frozen_;
  uint64_t seed_;
  int64_t rank_;
};

}  // namespace lowrank::adapt
