// LoRA — Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685:
//   Δ(x) = s · B (A x),  A [r, in], B [out, r],  s = α / r
// with rsLoRA's s = α / √r (Kalajdzievski, 2023, arXiv:2312.03732) and dropout on x (PEFT).
// Initialisation as PEFT: A ~ kaiming_uniform(a = √5) = U(±1/√in), B = 0; "gaussian": A ~ N(0, 1/r);
// init_lora_weights = false: B ~ U(±1/√r) too (nn.Linear's default), so Δ ≠ 0 from the start.
//
// DoRA — Liu et al., 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353, eq. 5:
//   W' = m · (W + sBA) / ‖W + sBA‖_row,  m [out] trained, initialised to ‖W‖_row
// computed as PEFT's lora/dora.py, with the norm detached from the gradient (paper §4.3):
//   Δ(x) = (m/n − 1) ⊙ (W x) + (m/n) ⊙ s B(Ax),  n = ‖W + sBA‖_row (bias excluded from W x).
//
// PiSSA — Meng et al., 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation",
// arXiv:2404.02948: W = U S Vᵀ, A₀ = diag(√(S_r/s)) V_rᵀ, B₀ = U_r diag(√(S_r/s)); the paper trains
// A, B from (A₀, B₀) on the residual W − sB₀A₀. Here the base stays W and
//   Δ(x) = s B(Ax) − s B₀(A₀x),  A₀, B₀ frozen,
// the same weight in exact arithmetic (adapter.h). Saved as PEFT's conversion to a plain LoRA:
// A' = [A; A₀], B' = [B, −B₀], r' = 2r, α' = 2α (α√2 with rsLoRA). A PEFT file written before
// conversion (init_lora_weights "pissa…") loads with A₀, B₀ recomputed from the base's SVD, as
// PEFT does. Deviation: "pissa_niter_N" uses the exact SVD rather than N subspace iterations.
#pragma once

#include <memory>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

class LoraAdapter : public TrainableAdapter {
 public:
  // a [r, in], b [out, r].
  LoraAdapter(at::Tensor a, at::Tensor b, double scaling);
  std::string_view kind() const override { return "lora"; }
  nn::NamedTensors tensors() const override { return {{"lora_A.weight", a_}, {"lora_B.weight", b_}}; }
  nn::NamedTensors parameters() const override { return tensors(); }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;
  int64_t rank() const { return a_.size(0); }
  double scaling() const { return scaling_; }
  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  at::Tensor a_, b_;
  double scaling_;
};

// Reads lora_A.weight / lora_B.weight of rank spec.r for the base, checking shapes.
std::shared_ptr<LoraAdapter> load_lora(const LayerSpec& spec, const nn::BaseOperator& base,
                                       const TensorMap& tensors, std::string_view what);

}  // namespace lowrank::adapt
