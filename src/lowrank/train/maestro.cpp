// Maestro: low-rank ordered decomposition trained with ordered dropout; see maestro.h.
#include "lowrank/train/maestro.h"

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"
#include "lowrank/train/parameterization_internal.h"

namespace lowrank::train {

MaestroOperator::MaestroOperator(at::Tensor b, at::Tensor a, at::Tensor bias)
    : b_(std::move(b)), a_(std::move(a)), bias_(std::move(bias)) {
  LR_CHECK(a_.dim() == 2 && b_.dim() == 2 && b_.size(1) == a_.size(0) && a_.size(0) >= 1, InvalidArgument,
           "maestro: need B [out, r] and A [r, in] with r >= 1, got ", b_.sizes(), " and ", a_.sizes());
  LR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == b_.size(0)), InvalidArgument,
           "maestro: bias of shape ", bias_.sizes(), " for ", b_.size(0), " outputs");
  active_ = a_.size(0);
}

std::shared_ptr<MaestroOperator> MaestroOperator::init(const nn::LinearSlot& slot,
                                                       const ParameterizationConfig& config, uint64_t) {
  const at::Tensor w = slot.base().dense_weight().detach();
  auto [u, s, vh] = at::linalg_svd(w.to(at::kFloat), /*full_matrices=*/false);
  const int64_t r = config.rank;
  const at::Tensor root = s.narrow(0, 0, r).sqrt();
  const at::TensorOptions options = w.options().requires_grad(false);
  at::Tensor b = (u.narrow(1, 0, r) * root).to(options).contiguous();
  at::Tensor a = (vh.narrow(0, 0, r) * root.unsqueeze(1)).to(options).contiguous();
  at::Tensor bias = slot.base().bias();
  return std::make_shared<MaestroOperator>(std::move(b), std::move(a), bias.defined() ? bias.detach() : bias);
}

at::Tensor MaestroOperator::forward(const at::Tensor& x) const {
  // x [..., in] -> x A[:b]ᵀ [..., b] -> · B[:, :b]ᵀ + bias [..., out]
  return at::linear(at::linear(x, a_.narrow(0, 0, active_)), b_.narrow(1, 0, active_), bias_);
}

nn::NamedTensors MaestroOperator::trainable() const {
  nn::NamedTensors out{{"lowrank_a", a_}, {"lowrank_b", b_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

at::Tensor MaestroOperator::dense_weight() const {
  return at::matmul(b_.narrow(1, 0, active_), a_.narrow(0, 0, active_));
}

void MaestroOperator::begin_step(int64_t b) const {
  LR_CHECK(b >= 1 && b <= rank(), InvalidArgument, "maestro: cut-off ", b, " outside [1, ", rank(), "]");
  at::NoGradGuard no_grad;
  active_ = b;
  tail_b_ = b_.narrow(1, b, rank() - b).clone();
  tail_a_ = a_.narrow(0, b, rank() - b).clone();
}

void MaestroOperator::end_step() const {
  at::NoGradGuard no_grad;
  if (tail_a_.defined()) {
    b_.narrow(1, active_, rank() - active_).copy_(tail_b_);
    a_.narrow(0, active_, rank() - active_).copy_(tail_a_);
  }
  tail_b_ = at::Tensor();
  tail_a_ = at::Tensor();
  active_ = rank();
}

std::shared_ptr<MaestroOperator> MaestroOperator::truncate(int64_t b) const {
  LR_CHECK(b >= 1 && b <= rank(), InvalidArgument, "maestro: cannot truncate rank ", rank(), " to ", b);
  return std::make_shared<MaestroOperator>(b_.detach().narrow(1, 0, b).clone(),
                                           a_.detach().narrow(0, 0, b).clone(),
                                           bias_.defined() ? bias_.detach().clone() : bias_);
}

int64_t maestro_cutoff(uint64_t seed, int64_t step, uint64_t slot, int64_t r) {
  const uint64_t h = detail::derive_seed(detail::derive_seed(seed, static_cast<uint64_t>(step)), slot);
  return 1 + static_cast<int64_t>(h % static_cast<uint64_t>(r));
}

namespace {

ParameterizationHooks maestro_hooks(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    const ParameterizationConfig&, uint64_t seed) {
  const auto ops = detail::operators_as<MaestroOperator>(operators, "maestro");
  ParameterizationHooks hooks;
  hooks.before_step = [ops, seed](int64_t step) {
    for (size_t i = 0; i < ops.size(); ++i) {
      const MaestroOperator& op = *ops[i].second;
      op.begin_step(maestro_cutoff(seed, step, i, op.rank()));
    }
  };
  hooks.after_update = [ops](int64_t, optim::Optimizer&) {
    for (const auto& [name, op] : ops) op->end_step();
  };
  return hooks;
}

}  // namespace

void register_maestro(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "maestro",
       .summary = "low-rank ordered decomposition W = B A trained with ordered dropout: each step uses only "
                  "the first b ~ U{1..r} components, so the model can be cut to any rank",
       .paper = "Horvath et al., 2024, ICML, arXiv:2308.14929",
       .options = {{"rank", "r, number of ordered components of B A (default 128)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(MaestroOperator::init(slot, config, seed));
           },
       .hooks = maestro_hooks});
}

}  // namespace lowrank::train
