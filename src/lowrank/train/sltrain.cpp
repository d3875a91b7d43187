// SLTrain: sparse plus low-rank linear layers; see sltrain.h.
#include "lowrank/train/sltrain.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/train/parameterization_internal.h"

namespace lowrank::train {

SlTrainOperator::SlTrainOperator(at::Tensor b, at::Tensor a, double scale, at::Tensor indices,
                                 at::Tensor values, at::Tensor bias)
    : b_(std::move(b)),
      a_(std::move(a)),
      scale_(scale),
      indices_(std::move(indices)),
      values_(std::move(values)),
      bias_(std::move(bias)) {
  LR_CHECK(a_.dim() == 2 && b_.dim() == 2 && b_.size(1) == a_.size(0), InvalidArgument,
           "sltrain: need B [out, r] and A [r, in], got ", b_.sizes(), " and ", a_.sizes());
  LR_CHECK(indices_.dim() == 1 && indices_.scalar_type() == at::kLong && values_.dim() == 1 &&
               values_.size(0) == indices_.size(0),
           InvalidArgument, "sltrain: need int64 indices [nnz] and values [nnz], got ",
           c10::toString(indices_.scalar_type()), " ", indices_.sizes(), " and ", values_.sizes());
  const int64_t mn = b_.size(0) * a_.size(1);
  LR_CHECK(
      indices_.numel() == 0 || (indices_.min().item<int64_t>() >= 0 && indices_.max().item<int64_t>() < mn),
      InvalidArgument, "sltrain: support indices must lie in [0, ", mn, ")");
  LR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == b_.size(0)), InvalidArgument,
           "sltrain: bias of shape ", bias_.sizes(), " for ", b_.size(0), " outputs");
}

std::shared_ptr<SlTrainOperator> SlTrainOperator::init(const nn::LinearSlot& slot,
                                                       const ParameterizationConfig& config, uint64_t seed) {
  const int64_t out = slot.out_features(), in = slot.in_features();
  const at::Tensor w = slot.base().dense_weight();
  const at::TensorOptions options = w.options().requires_grad(false);
  at::Tensor b = at::zeros({out, config.rank}, options);
  at::Tensor a = detail::kaiming_uniform(config.rank, in, detail::derive_seed(seed, 0), options);
  // The support: randperm(out·in)[:nnz], sorted (splora_linear.py), drawn on the CPU.
  const int64_t mn = out * in;
  const int64_t nnz = static_cast<int64_t>(std::floor(config.density * static_cast<double>(mn)));
  at::Generator gen = at::detail::createCPUGenerator(detail::derive_seed(seed, 2));
  at::Tensor indices = std::get<0>(at::randperm(mn, gen, at::kLong).slice(0, 0, nnz).sort()).to(w.device());
  // Values ~ U(±1/√in), as the reference's init of the sparse values.
  at::Tensor values =
      detail::uniform({nnz}, 1.0 / std::sqrt(static_cast<double>(in)), detail::derive_seed(seed, 3), options);
  at::Tensor bias = slot.base().bias();
  return std::make_shared<SlTrainOperator>(std::move(b), std::move(a), config.scale(), std::move(indices),
                                           std::move(values), bias.defined() ? bias.detach() : bias);
}

at::Tensor SlTrainOperator::sparse_weight() const {
  const int64_t out = b_.size(0), in = a_.size(1);
  // scatter (not in place) is differentiable in its source: d values = dS.flat[indices].
  return at::zeros({out * in}, values_.options().requires_grad(false))
      .scatter(0, indices_, values_)
      .view({out, in});
}

at::Tensor SlTrainOperator::forward(const at::Tensor& x) const {
  // x [..., in]: (α/r)·(x Aᵀ) Bᵀ [..., out] + x Sᵀ + b
  at::Tensor y = at::linear(at::linear(x, a_) * scale_, b_);
  return y + at::linear(x, sparse_weight(), bias_);
}

nn::NamedTensors SlTrainOperator::trainable() const {
  nn::NamedTensors out{{"lowrank_a", a_}, {"lowrank_b", b_}, {"sparse_values", values_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

at::Tensor SlTrainOperator::dense_weight() const {
  return at::matmul(b_, a_) * scale_ + sparse_weight();
}

void register_sltrain(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "sltrain",
       .summary = "sparse plus low-rank W = (alpha/r) B A + S, S on a fixed random support",
       .paper = "Han et al., 2024, NeurIPS, arXiv:2406.02214",
       .options = {{"rank", "r, inner dimension of B A (default 128)"},
                   {"alpha", "alpha: the product is scaled by alpha/r (default 32)"},
                   {"density",
                    "delta: fraction of W's entries in the sparse support, (0, 1] (default 0.03)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(SlTrainOperator::init(slot, config, seed));
           },
       .hooks = nullptr});
}

}  // namespace lowrank::train
