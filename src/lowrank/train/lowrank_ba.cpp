// Plain low-rank BA pretraining baseline; see lowrank_ba.h.
#include "lowrank/train/lowrank_ba.h"

#include "lowrank/core/error.h"
#include "lowrank/train/parameterization_internal.h"

namespace lowrank::train {

LowRankBaOperator::LowRankBaOperator(at::Tensor b, at::Tensor a, double scale, at::Tensor bias)
    : b_(std::move(b)), a_(std::move(a)), scale_(scale), bias_(std::move(bias)) {
  LR_CHECK(a_.dim() == 2 && b_.dim() == 2 && b_.size(1) == a_.size(0), InvalidArgument,
           "low-rank BA: need B [out, r] and A [r, in], got ", b_.sizes(), " and ", a_.sizes());
  LR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == b_.size(0)), InvalidArgument,
           "low-rank BA: bias of shape ", bias_.sizes(), " for ", b_.size(0), " outputs");
}

std::shared_ptr<LowRankBaOperator> LowRankBaOperator::init(const nn::LinearSlot& slot,
                                                           const ParameterizationConfig& config,
                                                           uint64_t seed) {
  const at::Tensor w = slot.base().dense_weight();
  const at::TensorOptions options = w.options().requires_grad(false);
  at::Tensor a =
      detail::kaiming_uniform(config.rank, slot.in_features(), detail::derive_seed(seed, 0), options);
  at::Tensor b =
      detail::kaiming_uniform(slot.out_features(), config.rank, detail::derive_seed(seed, 1), options);
  at::Tensor bias = slot.base().bias();
  return std::make_shared<LowRankBaOperator>(std::move(b), std::move(a), config.scale(),
                                             bias.defined() ? bias.detach() : bias);
}

at::Tensor LowRankBaOperator::forward(const at::Tensor& x) const {
  // x [..., in] -> (x Aᵀ)·(α/r) [..., r] -> · Bᵀ + b [..., out]
  return at::linear(at::linear(x, a_) * scale_, b_, bias_);
}

nn::NamedTensors LowRankBaOperator::trainable() const {
  nn::NamedTensors out{{"lowrank_a", a_}, {"lowrank_b", b_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

at::Tensor LowRankBaOperator::dense_weight() const {
  return at::matmul(b_, a_) * scale_;
}

void register_lowrank_ba(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "lowrank",
       .summary = "plain low-rank W = (alpha/r) B A, both factors trained from scratch (baseline)",
       .paper = "Zhao et al., 2024, arXiv:2403.03507 (GaLore, Table 2 'Low-Rank' baseline)",
       .options = {{"rank", "r, inner dimension of B A (default 128)"},
                   {"alpha", "alpha: the product is scaled by alpha/r (default 32)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(LowRankBaOperator::init(slot, config, seed));
           },
       .hooks = nullptr});
}

}  // namespace lowrank::train
