// LoLDU — Shi et al., 2024, "LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for
// Parameter-Efficient Fine-Tuning", arXiv:2410.13618. Official code: SKDDJ/LoLDU
// (minloldu/loldu.py).
//
// The LU factorisation with partial pivoting of the weight, W = P L U' (torch.linalg.lu's
// convention), split as U' = diag(D) U with L unit lower and U unit upper triangular
// (linalg/ldu.h). With L_r = L[:, :r], U_r = U[:r] and z₀ = D[:r]:
//   W' = W_res + s · P L_r diag(z) U_r,   W_res = W − s₀ · P L_r diag(z₀) U_r,
// where only z [r] and the scalar s are trained, from z = z₀ and s = s₀ = α/r (the official
// code's scaling_factor: an nn.Parameter initialised to lora_alpha / rank; α/√r with rsLoRA);
// P, L_r and U_r are frozen. Here the base stays W (adapter.h) and
//   Δ(x) = (P L_r) ((s·z − s₀·z₀) ⊙ (U_r x)),
// the same weight in exact arithmetic, Δ = 0 at initialisation.
//
// Saved as peft_type "LOWRANK_LOLDU", per slot: loldu_L [out, r] (P·L_r: the permutation
// applied to L's rows), loldu_U [r, in], loldu_z0 [r] and loldu_s0 [1] frozen, loldu_z [r] and
// loldu_s [1] trained. The file alone gives Δ; loading does no factorisation.
// Deviations: P is folded into L_r instead of being kept as an [out, out] matrix; the LU is
// computed in float32 (float64 for float64 models) by at::linalg_lu, and a weight with an exactly
// zero pivot anywhere is rejected (linalg::ldu) although only the first r are used.
#pragma once

#include <memory>
#include <optional>

#include "lowrank/adapt/adapter.h"

namespace lowrank::adapt {

class LolduAdapter final : public TrainableAdapter {
 public:
  // l [out, r] (P·L_r), u [r, in], z0 and z [r], s0 and s [1].
  LolduAdapter(at::Tensor l, at::Tensor u, at::Tensor z0, at::Tensor s0, at::Tensor z, at::Tensor s);
  std::string_view kind() const override { return "loldu"; }
  nn::NamedTensors tensors() const override {
    return {{"loldu_L", l_},   {"loldu_U", u_}, {"loldu_z0", z0_},
            {"loldu_s0", s0_}, {"loldu_z", z_}, {"loldu_s", s_}};
  }
  nn::NamedTensors parameters() const override { return {{"loldu_z", z_}, {"loldu_s", s_}}; }
  at::Tensor delta_weight(const nn::BaseOperator& base) const override;
  std::optional<nn::LowRankDelta> low_rank_delta() const override;

 protected:
  at::Tensor compute_delta(const at::Tensor& x, const at::Tensor& base_y,
                           const nn::BaseOperator& base) const override;

 private:
  // s·z − s₀·z₀ [r].
  at::Tensor diagonal() const { return s_ * z_ - s0_ * z0_; }

  at::Tensor l_, u_, z0_, s0_, z_, s_;
};

}  // namespace lowrank::adapt
