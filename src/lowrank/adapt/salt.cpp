// SALT: scale-and-shift of the top singular values plus a LoRA on the remaining subspace; the
// equations are in salt.h.
#include "lowrank/adapt/salt.h"

#include <algorithm>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/svd.h"

namespace lowrank::adapt {

SaltAdapter::SaltAdapter(at::Tensor u, at::Tensor v, at::Tensor sigma, at::Tensor scale, at::Tensor shift,
                         at::Tensor lora_a, at::Tensor lora_b)
    : u_(std::move(u)),
      v_(std::move(v)),
      sigma_(std::move(sigma)),
      scale_(std::move(scale)),
      shift_(std::move(shift)),
      lora_a_(std::move(lora_a)),
      lora_b_(std::move(lora_b)) {
  const int64_t r = sigma_.size(0);
  LR_CHECK(u_.dim() == 2 && v_.dim() == 2 && u_.size(1) == r && v_.size(0) == r &&
               scale_.sizes() == sigma_.sizes() && shift_.sizes() == sigma_.sizes() && lora_a_.dim() == 2 &&
               lora_b_.dim() == 2 && lora_a_.size(0) == lora_b_.size(1) && lora_a_.size(1) == v_.size(1) &&
               lora_b_.size(0) == u_.size(0),
           InvalidArgument, "salt: U ", u_.sizes(), ", V ", v_.sizes(), ", sigma ", sigma_.sizes(),
           ", scale ", scale_.sizes(), ", shift ", shift_.sizes(), ", lora_A ", lora_a_.sizes(),
           " and lora_B ", lora_b_.sizes(), " do not fit together");
}

at::Tensor SaltAdapter::top_change() const {
  return at::relu(scale_ * sigma_ + shift_) - sigma_;
}

at::Tensor SaltAdapter::projected_a() const {
  return lora_a_ - at::matmul(at::matmul(lora_a_, v_.t()), v_);
}

at::Tensor SaltAdapter::projected_b() const {
  return lora_b_ - at::matmul(u_, at::matmul(u_.t(), lora_b_));
}

at::Tensor SaltAdapter::compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const {
  const at::Tensor top = at::linear(at::linear(x, v_) * top_change(), u_);
  return top + at::linear(at::linear(x, projected_a()), projected_b());
}

at::Tensor SaltAdapter::delta_weight(const nn::BaseOperator&) const {
  return at::matmul(u_ * top_change().unsqueeze(0), v_) + at::matmul(projected_b(), projected_a());
}

std::optional<nn::LowRankDelta> SaltAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  return nn::LowRankDelta{at::cat({top_change().unsqueeze(1) * v_, projected_a()}, 0),
                          at::cat({u_, projected_b()}, 1), weight()};
}

namespace {

int64_t lora_rank(const LayerSpec& spec) {
  const int64_t r_lora = spec.config->option<int64_t>("lora_rank", spec.r);
  LR_CHECK(r_lora >= 1, InvalidArgument, "salt: option lora_rank must be >= 1, got ", r_lora);
  return r_lora;
}

std::shared_ptr<TrainableAdapter> create_salt(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
  const int64_t r_lora = lora_rank(spec);
  const linalg::Svd svd = linalg::truncated_svd(base.dense_weight().detach().to(at::kCPU), spec.r);
  // Copies, so that the slot does not keep the whole decomposition alive through a view.
  auto to_slot = [&](const at::Tensor& t) { return t.to(spec.device, spec.dtype, false, true).contiguous(); };
  const auto options = at::TensorOptions(spec.dtype).device(spec.device);
  at::Generator gen = slot_generator(spec);
  at::Tensor lora_a = kaiming_uniform(r_lora, base.in_features(), spec, gen);
  return std::make_shared<SaltAdapter>(to_slot(svd.U), to_slot(svd.Vh), to_slot(svd.S),
                                       at::ones({spec.r}, options), at::zeros({spec.r}, options), lora_a,
                                       at::zeros({base.out_features(), r_lora}, options));
}

std::shared_ptr<TrainableAdapter> load_salt(const LayerSpec& spec, const nn::BaseOperator& base,
                                            const TensorMap& tensors, std::string_view what) {
  const int64_t r_lora = lora_rank(spec);
  return std::make_shared<SaltAdapter>(
      expect_tensor(tensors, "salt_U", {base.out_features(), spec.r}, spec, what),
      expect_tensor(tensors, "salt_V", {spec.r, base.in_features()}, spec, what),
      expect_tensor(tensors, "salt_sigma", {spec.r}, spec, what),
      expect_tensor(tensors, "salt_scale", {spec.r}, spec, what),
      expect_tensor(tensors, "salt_shift", {spec.r}, spec, what),
      expect_tensor(tensors, "salt_lora_A", {r_lora, base.in_features()}, spec, what),
      expect_tensor(tensors, "salt_lora_B", {base.out_features(), r_lora}, spec, what));
}

}  // namespace

void register_salt(Registry<AdapterMethod>& registry) {
  registry.add({"salt",
                "Scale and shift of the top-r singular values plus a LoRA on the remaining subspace",
                "Elsayed et al., 2025, arXiv:2503.16055",
                {{"r", "number of top singular values scaled and shifted (8)"},
                 {"lora_rank",
                  "rank of the LoRA on the remaining subspace (default r); "
                  "2r + lora_rank*(in + out) trained parameters per slot"}}},
               {"LOWRANK_SALT", create_salt, load_salt, {}});
}

}  // namespace lowrank::adapt
