// SVFit: trained top-r singular values; the equations are in svfit.h.
#include "lowrank/adapt/svfit.h"

#include <algorithm>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/svd.h"

namespace lowrank::adapt {

SvfitAdapter::SvfitAdapter(at::Tensor u, at::Tensor v, at::Tensor sigma0, at::Tensor sigma)
    : u_(std::move(u)), v_(std::move(v)), sigma0_(std::move(sigma0)), sigma_(std::move(sigma)) {
  const int64_t r = sigma_.size(0);
  LR_CHECK(u_.dim() == 2 && v_.dim() == 2 && u_.size(1) == r && v_.size(0) == r &&
               sigma0_.sizes() == sigma_.sizes(),
           InvalidArgument, "svfit: U ", u_.sizes(), ", V ", v_.sizes(), ", sigma0 ", sigma0_.sizes(),
           " and sigma ", sigma_.sizes(), " do not form U diag(sigma) V");
}

at::Tensor SvfitAdapter::compute_delta(const at::Tensor& x, const at::Tensor&,
                                       const nn::BaseOperator&) const {
  return at::linear(at::linear(x, v_) * (sigma_ - sigma0_), u_);
}

at::Tensor SvfitAdapter::delta_weight(const nn::BaseOperator&) const {
  return at::matmul(u_ * (sigma_ - sigma0_).unsqueeze(0), v_);
}

std::optional<nn::LowRankDelta> SvfitAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  return nn::LowRankDelta{(sigma_ - sigma0_).unsqueeze(1) * v_, u_, weight()};
}

namespace {

std::shared_ptr<TrainableAdapter> create_svfit(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
  const linalg::Svd svd = linalg::truncated_svd(base.dense_weight().detach().to(at::kCPU), spec.r);
  // A copy, so that the slot does not keep the whole decomposition alive through a view.
  auto to_slot = [&](const at::Tensor& t) { return t.to(spec.device, spec.dtype, false, true).contiguous(); };
  at::Tensor sigma0 = to_slot(svd.S);
  return std::make_shared<SvfitAdapter>(to_slot(svd.U), to_slot(svd.Vh), sigma0, sigma0.clone());
}

std::shared_ptr<TrainableAdapter> load_svfit(const LayerSpec& spec, const nn::BaseOperator& base,
                                             const TensorMap& tensors, std::string_view what) {
  return std::make_shared<SvfitAdapter>(
      expect_tensor(tensors, "svfit_U", {base.out_features(), spec.r}, spec, what),
      expect_tensor(tensors, "svfit_V", {spec.r, base.in_features()}, spec, what),
      expect_tensor(tensors, "svfit_sigma0", {spec.r}, spec, what),
      expect_tensor(tensors, "svfit_sigma", {spec.r}, spec, what));
}

}  // namespace

void register_svfit(Registry<AdapterMethod>& registry) {
  registry.add({"svfit",
                "Trains the top-r singular values of W; its singular vectors stay frozen",
                "Sun et al., 2024, arXiv:2409.05926",
                {{"r", "number of top singular values trained per slot (8); r parameters per slot"}}},
               {"LOWRANK_SVFIT", create_svfit, load_svfit, {}});
}

}  // namespace lowrank::adapt
