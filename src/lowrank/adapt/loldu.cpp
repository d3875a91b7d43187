// LoLDU: trained diagonal and scale of the weight's LDU factors; the equations are in loldu.h.
#include "lowrank/adapt/loldu.h"

#include <algorithm>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/ldu.h"

namespace lowrank::adapt {

LolduAdapter::LolduAdapter(at::Tensor l, at::Tensor u, at::Tensor z0, at::Tensor s0, at::Tensor z,
                           at::Tensor s)
    : l_(std::move(l)),
      u_(std::move(u)),
      z0_(std::move(z0)),
      s0_(std::move(s0)),
      z_(std::move(z)),
      s_(std::move(s)) {
  const int64_t r = z_.size(0);
  LR_CHECK(l_.dim() == 2 && u_.dim() == 2 && l_.size(1) == r && u_.size(0) == r &&
               z0_.sizes() == z_.sizes() && s_.numel() == 1 && s0_.numel() == 1,
           InvalidArgument, "loldu: L ", l_.sizes(), ", U ", u_.sizes(), ", z ", z_.sizes(), ", z0 ",
           z0_.sizes(), ", s ", s_.sizes(), " and s0 ", s0_.sizes(), " do not form s·L diag(z) U");
}

at::Tensor LolduAdapter::compute_delta(const at::Tensor& x, const at::Tensor&,
                                       const nn::BaseOperator&) const {
  return at::linear(at::linear(x, u_) * diagonal(), l_);
}

at::Tensor LolduAdapter::delta_weight(const nn::BaseOperator&) const {
  return at::matmul(l_ * diagonal().unsqueeze(0), u_);
}

std::optional<nn::LowRankDelta> LolduAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  return nn::LowRankDelta{diagonal().unsqueeze(1) * u_, l_, weight()};
}

namespace {

std::shared_ptr<TrainableAdapter> create_loldu(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
  // rcond 0: only exactly zero pivots are rejected; the adapter uses the first r.
  const linalg::Ldu f = linalg::ldu(base.dense_weight().detach().to(at::kCPU), 0.0);
  // linalg::ldu's P satisfies P W = L diag(D) U, so torch's P (W = P L diag(D) U) is its transpose.
  const at::Tensor pl = at::matmul(f.P.mT(), f.L.slice(1, 0, spec.r));
  auto to_slot = [&](const at::Tensor& t) { return t.to(spec.device, spec.dtype, false, true).contiguous(); };
  at::Tensor z0 = to_slot(f.D.slice(0, 0, spec.r));
  at::Tensor s0 = at::full({1}, spec.scaling, at::TensorOptions(spec.dtype).device(spec.device));
  return std::make_shared<LolduAdapter>(to_slot(pl), to_slot(f.U.slice(0, 0, spec.r)), z0, s0, z0.clone(),
                                        s0.clone());
}

std::shared_ptr<TrainableAdapter> load_loldu(const LayerSpec& spec, const nn::BaseOperator& base,
                                             const TensorMap& tensors, std::string_view what) {
  return std::make_shared<LolduAdapter>(
      expect_tensor(tensors, "loldu_L", {base.out_features(), spec.r}, spec, what),
      expect_tensor(tensors, "loldu_U", {spec.r, base.in_features()}, spec, what),
      expect_tensor(tensors, "loldu_z0", {spec.r}, spec, what),
      expect_tensor(tensors, "loldu_s0", {1}, spec, what),
      expect_tensor(tensors, "loldu_z", {spec.r}, spec, what),
      expect_tensor(tensors, "loldu_s", {1}, spec, what));
}

}  // namespace

void register_loldu(Registry<AdapterMethod>& registry) {
  registry.add(
      {"loldu",
       "Trains r pivots and one scale of W's LDU factors: s*P L_r diag(z) U_r",
       "Shi et al., 2024, arXiv:2410.13618",
       {{"r", "number of LDU components per slot (8); r + 1 trained parameters per slot"},
        {"lora_alpha", "alpha (8); the trained scale s starts at alpha/r (alpha/sqrt(r) with use_rslora)"}}},
      {"LOWRANK_LOLDU", create_loldu, load_loldu, {}});
}

}  // namespace lowrank::adapt
