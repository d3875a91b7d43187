// SALT — Elsayed et al., 2025, "SALT: Singular Value Adaptation with Low-Rank Transformation",
// arXiv:2503.16055. Official code: BioMedIA-MBZUAI/SALT (SALTLinear).
//
// With the SVD W = U diag(σ) Vᵀ, the top r singular values get a trained scale and shift, and
// the rest of the spectrum a low-rank update:
//   σ'_i = ReLU(a_i σ_i + b_i)  for i < r  (a = 1, b = 0 at initialisation),
//   W' = U_r diag(σ') V_rᵀ + W_rest + Δ_rest,  W_rest = W − U_r diag(σ) V_rᵀ.
// "LoRA on the remaining subspace": the official layer adds X Y to the block of Σ that belongs to
// the remaining singular vectors, W' = U [diag(σ'), 0; 0, Σ_rest + X Y] Vᵀ, i.e. the low-rank
// update U_rest X Y V_restᵀ confined to the orthogonal complements of the top-r left and right
// singular subspaces. Here it is written with a LoRA pair projected onto those complements,
//   Δ_rest = (I − U_r U_rᵀ) B A (I − V_r V_rᵀ),  A [r_lora, in], B [out, r_lora],
// which spans the same updates (for a square W exactly; for a rectangular one the complement also
// holds the directions W maps to or from zero) without storing the full U and V. So
//   Δ(x) = U_r ((ReLU(a ⊙ σ + b) − σ) ⊙ V_rᵀx) + B′ (A′ x),  A′ = A − (A V_r) V_rᵀ, B′ = B − U_r (U_rᵀ B),
// on the unchanged base (adapter.h); a, b, A and B are trained, U_r, V_r and σ frozen.
//
// Saved as peft_type "LOWRANK_SALT", per slot: salt_U [out, r], salt_V [r, in] (V_rᵀ),
// salt_sigma [r] frozen; salt_scale [r], salt_shift [r], salt_lora_A [r_lora, in] and
// salt_lora_B [out, r_lora] trained. The file alone gives Δ; loading does no SVD.
// Deviations: A ~ U(±1/√in) (PEFT's LoRA init) and B = 0, so that Δ = 0 at initialisation (the
// official X, Y ~ N(0, 0.01²) both start non-zero); the ReLU acts on the r scaled singular values
// only, not elementwise on the residual block Σ_rest + X Y as in the official layer (which would
// clip negative off-diagonal entries and make the update neither low-rank nor additive); no
// scaling of the LoRA term (as the official layer; lora_alpha is unused); the regularisation
// loss of the official layer (‖1 − a‖ + ‖b‖ + ‖X‖‖Y‖) is not added.
#pragma once

#include <memory>
#include <optional>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

class SaltAdapter final : public TrainableAdapter {
 public:
  // u [out, r], v [r, in] (V_rᵀ), sigma, scale, shift [r], lora_a [r_lora, in], lora_b [out, r_lora].
  SaltAdapter(at::Tensor u, at::Tensor v, at::Tensor sigma, at::Tensor scale, at::Tensor shift,
              at::Tensor lora_a, at::Tensor lora_b);
  std::string_view kind() const override { return "salt"; }
  nn::NamedTensors tensors() const override {
    return {{"salt_U", u_},         {"salt_V", v_},           {"salt_sigma", sigma_},  {"salt_scale", scale_},
            {"salt_shift", shift_}, {"salt_lora_A", lora_a_}, {"salt_lora_B", lora_b_}};
  }
  nn::NamedTensors parameters() const override {
    return {
        {"salt_scale", scale_}, {"salt_shift", shift_}, {"salt_lora_A", lora_a_}, {"salt_lora_B", lora_b_}};
  }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  // ReLU(a ⊙ σ + b) − σ [r].
  at::Tensor top_change() const;
  // A′ and B′: the LoRA pair projected onto the complements of V_r and U_r.
  at::Tensor projected_a() const;
  at::Tensor projected_b() const;

  at::Tensor u_, v_, sigma_, scale_, shift_, lora_a_, lora_b_;
};

}  // namespace lowrank::adapt
