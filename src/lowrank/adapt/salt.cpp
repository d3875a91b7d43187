// SALT: scale and shift of the top singular values, a LoRA in the coordinates of the remaining
// singular vectors, and the official regulariser; the equations are in salt.h.
#include "lowrank/adapt/salt.h"

#include <algorithm>
#include <cmath>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/linalg/svd.h"

namespace lowrank::adapt {

SaltAdapter::SaltAdapter(at::Tensor u, at::Tensor v, at::Tensor sigma, at::Tensor scale, at::Tensor shift,
                         at::Tensor x, at::Tensor y, double reg_weight)
    : u_(std::move(u)),
      v_(std::move(v)),
      sigma_(std::move(sigma)),
      scale_(std::move(scale)),
      shift_(std::move(shift)),
      x_(std::move(x)),
      y_(std::move(y)),
      reg_weight_(reg_weight) {
  const int64_t k = sigma_.dim() == 1 ? sigma_.size(0) : -1;
  const int64_t r = scale_.dim() == 1 ? scale_.size(0) : -1;
  LR_CHECK(k > 0 && r > 0 && r < k && u_.dim() == 2 && v_.dim() == 2 && u_.size(1) == k && v_.size(0) == k &&
               shift_.sizes() == scale_.sizes() && x_.dim() == 2 && y_.dim() == 2 && x_.size(0) == k - r &&
               y_.size(1) == k - r && x_.size(1) == y_.size(0),
           InvalidArgument, "salt: U ", u_.sizes(), ", V ", v_.sizes(), ", sigma ", sigma_.sizes(),
           ", scale ", scale_.sizes(), ", shift ", shift_.sizes(), ", X ", x_.sizes(), " and Y ", y_.sizes(),
           " do not fit together");
  LR_CHECK(reg_weight_ >= 0 && std::isfinite(reg_weight_), InvalidArgument,
           "salt: option reg_weight must be a finite number >= 0, got ", reg_weight_);
}

at::Tensor SaltAdapter::top_change() const {
  const at::Tensor top = sigma_.narrow(0, 0, top_rank());
  return at::relu(scale_ * top + shift_) - top;
}

at::Tensor SaltAdapter::rest_change() const {
  const at::Tensor rest = at::diag(sigma_.narrow(0, top_rank(), x_.size(0)));
  return at::relu(rest + at::matmul(x_, y_)) - rest;
}

at::Tensor SaltAdapter::compute_delta(const at::Tensor& x, const at::Tensor&, const nn::BaseOperator&) const {
  const int64_t r = top_rank();
  const at::Tensor coords = at::linear(x, v_);  // Vᵀx: the input in the right singular basis
  const at::Tensor top = coords.narrow(-1, 0, r) * top_change();
  const at::Tensor rest = at::linear(coords.narrow(-1, r, x_.size(0)), rest_change());
  return at::linear(at::cat({top, rest}, -1), u_);
}

at::Tensor SaltAdapter::delta_weight(const nn::BaseOperator&) const {
  const int64_t r = top_rank(), rest = x_.size(0);
  return at::matmul(u_.narrow(1, 0, r) * top_change().unsqueeze(0), v_.narrow(0, 0, r)) +
         at::matmul(u_.narrow(1, r, rest), at::matmul(rest_change(), v_.narrow(0, r, rest)));
}

std::optional<nn::LowRankDelta> SaltAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  // Rank k: the residual block M is dense, so Δ = U · blockdiag(diag(top), M) · Vᵀ.
  const int64_t r = top_rank(), rest = x_.size(0);
  const at::Tensor a = at::cat(
      {top_change().unsqueeze(1) * v_.narrow(0, 0, r), at::matmul(rest_change(), v_.narrow(0, r, rest))}, 0);
  return nn::LowRankDelta{a, u_, weight()};
}

at::Tensor SaltAdapter::regularizer() const {
  const at::Tensor top = sigma_.narrow(0, 0, top_rank());
  // ‖diag(aσ + b) − diag(σ)‖_F of the official scale_shift_term, before the ReLU.
  return at::linalg_vector_norm(scale_ * top + shift_ - top) + at::linalg_vector_norm(at::matmul(x_, y_));
}

void SaltAdapter::before_step(int64_t step) {
  if (step < 0 || reg_weight_ == 0 || !scale_.requires_grad()) return;
  // The trainer zeroed the gradients just before this hook; the forward passes accumulate on top.
  (regularizer() * reg_weight_).backward();
}

namespace {

struct SaltOptions {
  int64_t lora_rank;
  double reg_weight;
};

SaltOptions salt_options(const LayerSpec& spec) {
  const AdapterConfig& c = *spec.config;
  const int64_t r_lora = c.option<int64_t>("lora_rank", spec.r);
  LR_CHECK(r_lora >= 1, InvalidArgument, "salt: option lora_rank must be >= 1, got ", r_lora);
  const double reg_weight = c.option<double>("reg_weight", 0.01);
  LR_CHECK(reg_weight >= 0 && std::isfinite(reg_weight), InvalidArgument,
           "salt: option reg_weight must be a finite number >= 0, got ", reg_weight);
  return {r_lora, reg_weight};
}

int64_t spectrum_size(const LayerSpec& spec, const nn::BaseOperator& base) {
  const int64_t k = std::min(base.in_features(), base.out_features());
  LR_CHECK(spec.r >= 1 && spec.r < k, InvalidArgument, "module ", spec.module, ": salt's r (", spec.r,
           ", the singular values scaled and shifted) must be in [1, min(in, out) - 1] = [1, ", k - 1,
           "], leaving a residual subspace for its LoRA");
  return k;
}

std::shared_ptr<TrainableAdapter> create_salt(const LayerSpec& spec, const nn::BaseOperator& base) {
  const int64_t k = spectrum_size(spec, base);
  const SaltOptions o = salt_options(spec);
  const linalg::Svd svd = linalg::truncated_svd(base.dense_weight().detach().to(at::kCPU), k);
  auto to_slot = [&](const at::Tensor& t) { return t.to(spec.device, spec.dtype, false, true).contiguous(); };
  const auto options = at::TensorOptions(spec.dtype).device(spec.device);
  // kaiming_uniform_(X, a=√20, mode="fan_in", nonlinearity="relu"): gain √2, fan_in = r_lora.
  at::Generator gen = slot_generator(spec);
  const double bound = std::sqrt(6.0 / static_cast<double>(o.lora_rank));
  at::Tensor x = at::empty({k - spec.r, o.lora_rank}, at::kFloat);
  x.uniform_(-bound, bound, gen);
  return std::make_shared<SaltAdapter>(to_slot(svd.U), to_slot(svd.Vh), to_slot(svd.S),
                                       at::ones({spec.r}, options), at::zeros({spec.r}, options), to_slot(x),
                                       at::zeros({o.lora_rank, k - spec.r}, options), o.reg_weight);
}

std::shared_ptr<TrainableAdapter> load_salt(const LayerSpec& spec, const nn::BaseOperator& base,
                                            const TensorMap& tensors, std::string_view what) {
  const int64_t k = spectrum_size(spec, base);
  const SaltOptions o = salt_options(spec);
  return std::make_shared<SaltAdapter>(
      expect_tensor(tensors, "salt_U", {base.out_features(), k}, spec, what),
      expect_tensor(tensors, "salt_V", {k, base.in_features()}, spec, what),
      expect_tensor(tensors, "salt_sigma", {k}, spec, what),
      expect_tensor(tensors, "salt_scale", {spec.r}, spec, what),
      expect_tensor(tensors, "salt_shift", {spec.r}, spec, what),
      expect_tensor(tensors, "salt_X", {k - spec.r, o.lora_rank}, spec, what),
      expect_tensor(tensors, "salt_Y", {o.lora_rank, k - spec.r}, spec, what), o.reg_weight);
}

}  // namespace

void register_salt(Registry<AdapterMethod>& registry) {
  registry.add({"salt",
                "Scale and shift of the top-r singular values plus a LoRA in the coordinates of the "
                "remaining singular vectors",
                "Elsayed et al., 2025, arXiv:2503.16055",
                {{"r", "number of top singular values scaled and shifted (8), below min(in, out)"},
                 {"lora_rank",
                  "rank of the LoRA X Y on the remaining k - r singular values (default r); "
                  "2r + 2(k - r)*lora_rank trained parameters per slot, k = min(in, out)"},
                 {"reg_weight",
                  "weight of the official regulariser ||diag(a*s + b - s)||_F + ||X Y||_F added to the "
                  "loss (0.01, the official train() default; 0 turns it off)"}}},
               {"LOWRANK_SALT", create_salt, load_salt, {}});
}

}  // namespace lowrank::adapt
