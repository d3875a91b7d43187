// SALT — Elsayed et al., 2025, "SALT: Singular Value Adaptation with Low-Rank Transformation",
// arXiv:2503.16055. Official code: BioMedIA-MBZUAI/SALT, prompt_adapted_SAM2/modeling/Adapters/
// SALT.py (SALTLinear, the layer the SAM 2 backbone builds; train.py adds its loss term).
//
// With the thin SVD W = U diag(σ) Vᵀ (k = min(out, in) values), the top r singular values get a
// trained scale a and shift b, and the block of Σ that belongs to the remaining k − r singular
// vectors gets a rank-r_lora update X Y written in their coordinates:
//   Σ' = ReLU( [ diag(a ⊙ σ_r + b)      0          ]
//              [        0           diag(σ_rest) + X Y ] )      (ReLU elementwise, k × k)
//   W' = U Σ' Vᵀ,   X [k − r, r_lora],  Y [r_lora, k − r]
// Trained: a, b [r], X, Y: 2r + 2 (k − r) r_lora values per slot (the official parameter count).
// Frozen: U [out, k], Vᵀ [k, in], σ [k]. Initialisation as the official layer: a = 1, b = 0,
// Y = 0 and X from kaiming_uniform_(a = √20, mode fan_in, nonlinearity "relu"), whose gain is √2
// whatever a is (PyTorch's calculate_gain ignores a for "relu"), i.e. X ~ U(±√(6 / r_lora)). So
// Σ' = diag(σ) and W' = W at initialisation.
// Regulariser (the official forward returns it, train.py adds reg_multiplier times its sum over
// the layers to the loss; train()'s default reg_multiplier is 0.01):
//   R = ‖diag(a ⊙ σ_r + b) − diag(σ_r)‖_F + ‖X Y‖_F      (norms, not squared)
// Here the layer adds reg_weight · ∂R/∂θ to its parameters' gradients in before_step, after the
// trainer has zeroed them and before the forward passes: the gradient of LM loss + reg_weight · R,
// as the official loss. The logged loss is the LM loss alone.
//
// Written additively on the unchanged base (adapter.h):
//   Δ(x) = U_r ((ReLU(a ⊙ σ_r + b) − σ_r) ⊙ V_rᵀ x) + U_rest (M V_restᵀ x),
//   M = ReLU(diag(σ_rest) + X Y) − diag(σ_rest)  [(k − r) × (k − r)]
// which equals (U Σ' Vᵀ − U diag(σ) Vᵀ) x; U diag(σ) Vᵀ is W up to rounding.
//
// Saved as peft_type "LOWRANK_SALT", per slot: salt_U [out, k], salt_V [k, in] (Vᵀ), salt_sigma [k]
// frozen; salt_scale [r], salt_shift [r], salt_X [k − r, r_lora], salt_Y [r_lora, k − r] trained.
// X and Y live in the coordinates of this SVD's singular vectors (whose signs an SVD does not
// fix), so the file carries the decomposition: loading does no SVD. That makes the file about
// (out + in) · k values per slot, twice W for a square layer (the official layer keeps the same
// U, S, Vᵀ in memory).
// Deviations: r is a count (the SAM 2 layer takes ratio_salt, r = max(1, ⌊k·ratio⌋); its SAM 1
// layer takes the count); the default lora_rank is r (the official default r_lora is 8, the SAM 2
// backbone passes 256).
#pragma once

#include <memory>
#include <optional>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

class SaltAdapter final : public TrainableAdapter {
 public:
  // u [out, k], v [k, in] (Vᵀ), sigma [k], scale and shift [r], x [k − r, r_lora],
  // y [r_lora, k − r]; reg_weight ≥ 0 multiplies the regulariser R.
  SaltAdapter(at::Tensor u, at::Tensor v, at::Tensor sigma, at::Tensor scale, at::Tensor shift, at::Tensor x,
              at::Tensor y, double reg_weight);
  std::string_view kind() const override { return "salt"; }
  nn::NamedTensors tensors() const override {
    return {{"salt_U", u_},         {"salt_V", v_}, {"salt_sigma", sigma_}, {"salt_scale", scale_},
            {"salt_shift", shift_}, {"salt_X", x_}, {"salt_Y", y_}};
  }
  nn::NamedTensors parameters() const override {
    return {{"salt_scale", scale_}, {"salt_shift", shift_}, {"salt_X", x_}, {"salt_Y", y_}};
  }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;
  // Adds reg_weight · ∂R/∂θ to the trained tensors' gradients (step ≥ 0, while they require grad).
  void before_step(int64_t step) override;

  // R = ‖(a − 1) ⊙ σ_r + b‖₂ + ‖X Y‖_F, differentiable in a, b, X, Y.
  at::Tensor regularizer() const;
  double reg_weight() const { return reg_weight_; }
  int64_t top_rank() const { return scale_.size(0); }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  // ReLU(a ⊙ σ_r + b) − σ_r [r].
  at::Tensor top_change() const;
  // M = ReLU(diag(σ_rest) + X Y) − diag(σ_rest) [k − r, k − r].
  at::Tensor rest_change() const;

  at::Tensor u_, v_, sigma_, scale_, shift_, x_, y_;
  double reg_weight_;
};

}  // namespace lowrank::adapt
