// SVFit — Sun et al., 2024, "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models
// Using Singular Values", arXiv:2409.05926.
//
// The weight is split by its SVD, W = U Σ Vᵀ = W_r + W_e, with W_r = U_r diag(σ₀) V_rᵀ the top-r
// triplets and W_e the rest. Only the r singular values are trained, from σ₀; U_r, V_r and W_e
// stay frozen:  W' = W_e + U_r diag(σ) V_rᵀ.
// Here the base stays W (adapter.h) and
//   Δ(x) = U_r diag(σ − σ₀) V_rᵀ x,
// the same weight in exact arithmetic, with Δ = 0 at initialisation (σ = σ₀).
//
// Saved as peft_type "LOWRANK_SVFIT", per slot: svfit_U [out, r] (U_r), svfit_V [r, in] (V_rᵀ),
// svfit_sigma0 [r] (frozen), svfit_sigma [r] (trained). The file alone gives Δ: loading does
// no SVD, so it cannot pick different singular vectors (signs, near-equal values) than training.
// Deviations: the exact SVD (linalg::truncated_svd); r comes from the configuration (r,
// rank_pattern) rather than from an energy threshold; lora_alpha is not used (no scaling).
#pragma once

#include <memory>
#include <optional>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

class SvfitAdapter final : public TrainableAdapter {
 public:
  // u [out, r], v [r, in] (V_rᵀ), sigma0 and sigma [r].
  SvfitAdapter(at::Tensor u, at::Tensor v, at::Tensor sigma0, at::Tensor sigma);
  std::string_view kind() const override { return "svfit"; }
  nn::NamedTensors tensors() const override {
    return {{"svfit_U", u_}, {"svfit_V", v_}, {"svfit_sigma0", sigma0_}, {"svfit_sigma", sigma_}};
  }
  nn::NamedTensors parameters() const override { return {{"svfit_sigma", sigma_}}; }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  at::Tensor u_, v_, sigma0_, sigma_;
};

}  // namespace lowrank::adapt
