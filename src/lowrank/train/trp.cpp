// Trained Rank Pruning: nuclear-norm regularisation and periodic energy truncation; see trp.h.
#include "lowrank/train/trp.h"

#include <algorithm>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/train/parameterization_internal.h"

namespace lowrank::train {

TrpOperator::TrpOperator(at::Tensor weight, at::Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)) {
  LR_CHECK(weight_.dim() == 2, InvalidArgument, "trp: need W [out, in], got ", weight_.sizes());
  LR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == weight_.size(0)), InvalidArgument,
           "trp: bias of shape ", bias_.sizes(), " for ", weight_.size(0), " outputs");
}

std::shared_ptr<TrpOperator> TrpOperator::init(const nn::LinearSlot& slot, const ParameterizationConfig&,
                                               uint64_t) {
  // The dense init itself (a copy, so that the slot's old base is not trained through).
  at::Tensor bias = slot.base().bias();
  return std::make_shared<TrpOperator>(slot.base().dense_weight().detach().clone(),
                                       bias.defined() ? bias.detach() : bias);
}

nn::NamedTensors TrpOperator::trainable() const {
  nn::NamedTensors out{{"weight", weight_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

at::Tensor nuclear_norm_subgradient(const at::Tensor& w) {
  LR_CHECK(w.dim() == 2, InvalidArgument, "nuclear_norm_subgradient: need a matrix, got ", w.sizes());
  auto [u, s, vh] = at::linalg_svd(w.detach(), /*full_matrices=*/false);
  const double smax = s.numel() > 0 ? s.max().item<double>() : 0.0;
  const double eps = w.scalar_type() == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                    : std::numeric_limits<float>::epsilon();
  const double tol = static_cast<double>(std::max(w.size(0), w.size(1))) * eps * smax;
  const int64_t k = s.gt(tol).sum().item<int64_t>();
  return at::matmul(u.narrow(1, 0, k), vh.narrow(0, 0, k));
}

TruncatedSvd energy_truncated_svd(const at::Tensor& w, double energy) {
  LR_CHECK(w.dim() == 2, InvalidArgument, "energy_truncated_svd: need a matrix, got ", w.sizes());
  auto [u, s, vh] = at::linalg_svd(w.detach(), /*full_matrices=*/false);
  const int64_t k = linalg::energy_rank(s, energy);
  return {u.narrow(1, 0, k), s.narrow(0, 0, k), vh.narrow(0, 0, k)};
}

int64_t TrpOperator::truncate_and_regularize(double energy, double nuclear_weight) const {
  at::NoGradGuard no_grad;
  const TruncatedSvd t = energy_truncated_svd(weight_, energy);
  weight_.copy_(t.product());
  if (nuclear_weight > 0) weight_.mutable_grad() = at::matmul(t.u, t.vh).mul_(nuclear_weight);
  return t.rank();
}

namespace {

ParameterizationHooks trp_hooks(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    const ParameterizationConfig& config, uint64_t) {
  const auto ops = detail::operators_as<TrpOperator>(operators, "trp");
  ParameterizationHooks hooks;
  const double lambda = config.nuclear_weight, energy = config.energy;
  const int64_t every = config.prune_every;
  hooks.before_step = [ops, lambda, energy, every](int64_t step) {
    if (step % every != 0) return;
    int64_t kept = 0, full = 0;
    for (const auto& [name, op] : ops) {
      kept += op->truncate_and_regularize(energy, lambda);
      full += std::min(op->in_features(), op->out_features());
    }
    log::debug("trp: truncated before step ", step, ": ", kept, " of ", full, " ranks kept");
  };
  return hooks;
}

}  // namespace

void register_trp(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "trp",
       .summary =
           "trained rank pruning: dense W replaced every m steps by its energy-threshold truncated SVD, "
           "with a nuclear-norm subgradient on those steps",
       .paper = "Xu et al., 2020, IJCAI, arXiv:1812.02402",
       .options = {{"nuclear_weight", "lambda: weight of the nuclear-norm regulariser, >= 0 (default 3e-4)"},
                   {"energy",
                    "e: keep the smallest k with sum_{i<=k} s_i^2 >= e sum s_i^2, (0, 1] (default 0.9)"},
                   {"prune_every",
                    "m: truncate (and regularise) before every m-th optimizer step (default 5)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(TrpOperator::init(slot, config, seed));
           },
       .hooks = trp_hooks});
}

}  // namespace lowrank::train
