// LoRA-XS — Bałazy et al., 2024, "LoRA-XS: Low-Rank Adaptation with Extremely Small Number of
// Parameters", arXiv:2405.17604. Official code: MohammadrezaBanaei/LoRA-XS
// (utils/initialization_utils.py, utils/latent_utils.py).
//
//   Δ(x) = s · B (R (A x)),  B [out, r], A [r, in] frozen, R [r, r] the only trained tensor,
//   s = α/r (α/√r with rsLoRA).
// Initialisation from the truncated SVD of the base weight W = U S Vᵀ ([out, in]):
//   B = U_r,  A = diag(S_r) V_rᵀ,  R ~ N(0, σ²), σ = 1e-5.
// The paper writes A = U_r Σ_r, B = V_rᵀ for the transposed weight (x W, W [in, out]); with
// PEFT's [out, in] layout that puts the singular values on the input-side factor A, which is what
// the official code does (svd of weight.T, u·diag(s) into lora_A). Option singular_values =
// "output" puts them on B instead, "none" leaves both factors orthonormal. σ is the official
// init_module_weights(…, sigma=0.00001); option r_init = "zeros" starts from R = 0 (Δ = 0).
//
// Saved as peft_type "LOWRANK_LORA_XS" with lora_A.weight [r, in], lora_B.weight [out, r] and
// lora_R.weight [r, r]: the file alone gives Δ = s·B R A (loading does not redo the SVD, so a
// file stays valid for a base whose weights have since changed, and for bases that are not
// dense). Deviation: the exact SVD (at::linalg_svd) rather than the official randomized
// sklearn TruncatedSVD (n_iter 10), so B and A are the exact singular subspaces.
//
// LoRA-SB (lora_sb.h) uses the same adapter with another initialisation.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

// Δ(x) = s · B R A x with B and A frozen and R trained (LoRA-XS and LoRA-SB).
class BraAdapter final : public TrainableAdapter {
 public:
  // a [r, in], b [out, r], r [r, r]; kind "lora_xs" or "lora_sb".
  BraAdapter(std::string_view kind, at::Tensor a, at::Tensor b, at::Tensor r, double scaling);
  std::string_view kind() const override { return kind_; }
  nn::NamedTensors tensors() const override {
    return {{"lora_A.weight", a_}, {"lora_B.weight", b_}, {"lora_R.weight", r_}};
  }
  nn::NamedTensors parameters() const override { return {{"lora_R.weight", r_}}; }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;

  int64_t rank() const { return a_.size(0); }
  double scaling() const { return scaling_; }
  const at::Tensor& a() const { return a_; }
  const at::Tensor& b() const { return b_; }
  const at::Tensor& r() const { return r_; }

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  std::string kind_;
  at::Tensor a_, b_, r_;
  double scaling_;
};

// Reads lora_A.weight, lora_B.weight and lora_R.weight of rank spec.r for the base.
std::shared_ptr<BraAdapter> load_bra(std::string_view kind, const LayerSpec& spec,
                                     const nn::BaseOperator& base, const TensorMap& tensors,
                                     std::string_view what);

}  // namespace lowrank::adapt
