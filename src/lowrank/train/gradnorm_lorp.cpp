// GradNormLoRP's weight-normalised low-rank weights; see gradnorm_lorp.h.
#include "lowrank/train/gradnorm_lorp.h"

#include "lowrank/core/error.h"
#include "lowrank/train/parameterization_internal.h"

namespace lowrank::train {

GradNormLorpOperator::GradNormLorpOperator(at::Tensor base, at::Tensor b, at::Tensor a, at::Tensor magnitude,
                                           double scale, at::Tensor bias)
    : base_(std::move(base)),
      b_(std::move(b)),
      a_(std::move(a)),
      magnitude_(std::move(magnitude)),
      scale_(scale),
      bias_(std::move(bias)) {
  LR_CHECK(base_.dim() == 2 && b_.dim() == 2 && a_.dim() == 2 && b_.size(0) == base_.size(0) &&
               a_.size(1) == base_.size(1) && b_.size(1) == a_.size(0),
           InvalidArgument, "gradnormlorp: need W0 [out, in], B [out, r] and A [r, in], got ", base_.sizes(),
           ", ", b_.sizes(), " and ", a_.sizes());
  LR_CHECK(magnitude_.dim() == 1 && magnitude_.size(0) == base_.size(0), InvalidArgument,
           "gradnormlorp: need a magnitude [", base_.size(0), "], got ", magnitude_.sizes());
  LR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == base_.size(0)), InvalidArgument,
           "gradnormlorp: bias of shape ", bias_.sizes(), " for ", base_.size(0), " outputs");
}

std::shared_ptr<GradNormLorpOperator> GradNormLorpOperator::init(const nn::LinearSlot& slot,
                                                                 const ParameterizationConfig& config,
                                                                 uint64_t seed) {
  const at::Tensor w = slot.base().dense_weight().detach().clone();
  const at::TensorOptions options = w.options().requires_grad(false);
  // PEFT's LoRA init: B = 0, A = kaiming_uniform(a=√5); DoRA's m = ‖W₀ + s·B·A‖_row = ‖W₀‖_row.
  at::Tensor b = at::zeros({slot.out_features(), config.rank}, options);
  at::Tensor a =
      detail::kaiming_uniform(config.rank, slot.in_features(), detail::derive_seed(seed, 0), options);
  at::Tensor m = at::linalg_vector_norm(w, 2, {1}).contiguous();
  at::Tensor bias = slot.base().bias();
  return std::make_shared<GradNormLorpOperator>(w, std::move(b), std::move(a), std::move(m), config.scale(),
                                                bias.defined() ? bias.detach() : bias);
}

at::Tensor GradNormLorpOperator::dense_weight() const {
  const at::Tensor direction = base_ + at::matmul(b_, a_) * scale_;  // V = W₀ + s·B·A
  // n = ‖V‖_row as a constant in backward (PEFT's DoRA: weight_norm.detach()).
  const at::Tensor norm = at::linalg_vector_norm(direction.detach(), 2, {1}).clamp_min(1e-12);
  return direction * (magnitude_ / norm).unsqueeze(1);
}

at::Tensor GradNormLorpOperator::forward(const at::Tensor& x) const {
  return at::linear(x, dense_weight(), bias_);
}

nn::NamedTensors GradNormLorpOperator::trainable() const {
  nn::NamedTensors out{{"lowrank_a", a_}, {"lowrank_b", b_}, {"magnitude", magnitude_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

void register_gradnorm_lorp(Registry<ParameterizationMethod>& registry) {
  ParameterizationConfig defaults;
  defaults.rank = 8;  // the authors' LoraConfig(r=8, lora_alpha=16)
  defaults.alpha = 16;
  registry.add(
      {.name = "gradnormlorp",
       .summary =
           "GradNormLoRP's weights W = m (W0 + s B A) / ||W0 + s B A||_row, W0 frozen, m, A, B trained "
           "(pair with --optimizer gradnormlorp)",
       .paper = "Huang et al., 2024, AAAI 2025, arXiv:2412.19616",
       .options = {{"rank", "r, inner dimension of B A (default 8)"},
                   {"alpha", "alpha: the product is scaled by s = alpha/r (default 16)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(GradNormLorpOperator::init(slot, config, seed));
           },
       .hooks = nullptr,
       .defaults = defaults});
}

void check_gradnorm_lorp_pairing(std::string_view optimizer, std::string_view flag, std::string_view method,
                                 std::string_view required) {
  LR_CHECK(
      optimizer != "gradnormlorp" || method == required, InvalidArgument,
      "--optimizer gradnormlorp projects the gradients of the low-rank factors of GradNormLoRP's weights "
      "W = m (W0 + s B A) / ||W0 + s B A||: it needs ",
      flag, " ", required, " (got ", method.empty() ? std::string_view("none") : method,
      "); wngalore is the weight-normalised GaLore on dense weights");
}

}  // namespace lowrank::train
