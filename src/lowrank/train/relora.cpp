// ReLoRA: low-rank updates merged into a frozen dense weight at periodic restarts; see relora.h.
#include "lowrank/train/relora.h"

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/train/parameterization_internal.h"
#include "lowrank/train/schedule.h"

namespace lowrank::train {

ReloraOperator::ReloraOperator(at::Tensor w0, at::Tensor b, at::Tensor a, double scale, at::Tensor bias)
    : w0_(std::move(w0)), b_(std::move(b)), a_(std::move(a)), scale_(scale), bias_(std::move(bias)) {
  LR_CHECK(w0_.dim() == 2 && a_.dim() == 2 && b_.dim() == 2 && b_.size(1) == a_.size(0) &&
               b_.size(0) == w0_.size(0) && a_.size(1) == w0_.size(1),
           InvalidArgument, "relora: need W0 [out, in], B [out, r] and A [r, in], got ", w0_.sizes(), ", ",
           b_.sizes(), " and ", a_.sizes());
  LR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == w0_.size(0)), InvalidArgument,
           "relora: bias of shape ", bias_.sizes(), " for ", w0_.size(0), " outputs");
}

std::shared_ptr<ReloraOperator> ReloraOperator::init(const nn::LinearSlot& slot,
                                                     const ParameterizationConfig& config, uint64_t seed) {
  const at::Tensor w = slot.base().dense_weight().detach();
  const at::TensorOptions options = w.options().requires_grad(false);
  at::Tensor a =
      detail::kaiming_uniform(config.rank, slot.in_features(), detail::derive_seed(seed, 0), options);
  at::Tensor b = at::zeros({slot.out_features(), config.rank}, options);
  at::Tensor bias = slot.base().bias();
  return std::make_shared<ReloraOperator>(w, std::move(b), std::move(a), config.scale(),
                                          bias.defined() ? bias.detach() : bias);
}

at::Tensor ReloraOperator::forward(const at::Tensor& x) const {
  // x [..., in]: x W0ᵀ + b + (α/r)·(x Aᵀ) Bᵀ
  return at::linear(x, w0_, bias_) + at::linear(at::linear(x, a_) * scale_, b_);
}

nn::NamedTensors ReloraOperator::trainable() const {
  nn::NamedTensors out{{"lowrank_a", a_}, {"lowrank_b", b_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

at::Tensor ReloraOperator::dense_weight() const {
  return w0_ + at::matmul(b_, a_) * scale_;
}

void ReloraOperator::merge_and_reinit(uint64_t seed) const {
  at::NoGradGuard no_grad;
  // relora.py merge_and_reinit: weight += B @ A * scaling; kaiming_uniform_(A); zeros_(B).
  w0_.add_(at::matmul(b_, a_), scale_);
  a_.copy_(detail::kaiming_uniform(a_.size(0), a_.size(1), seed, a_.options()));
  b_.zero_();
}

namespace {

ParameterizationHooks relora_hooks(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    const ParameterizationConfig& config, uint64_t seed) {
  const auto ops = detail::operators_as<ReloraOperator>(operators, "relora");
  ParameterizationHooks hooks;
  const int64_t every = config.reset_every, warmup = config.restart_warmup;
  const double prune = config.prune_ratio;
  hooks.after_update = [ops, every, prune, seed](int64_t step, optim::Optimizer& optimizer) {
    if ((step + 1) % every != 0) return;
    const uint64_t restart = static_cast<uint64_t>((step + 1) / every);
    for (size_t i = 0; i < ops.size(); ++i) {
      const auto& [name, op] = ops[i];
      // A seed per (restart, slot): a resumed run draws the same A without any RNG state.
      op->merge_and_reinit(detail::derive_seed(detail::derive_seed(seed, restart), i));
      optimizer.prune_state(name + ".lowrank_a", prune);
      optimizer.prune_state(name + ".lowrank_b", prune);
    }
    log::debug("relora: restart ", restart, " after step ", step + 1, " (", ops.size(), " slots merged)");
  };
  hooks.lr_factor = [every, warmup](int64_t step) { return jagged_lr_factor(step, every, warmup); };
  return hooks;
}

}  // namespace

void register_relora(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "relora",
       .summary = "W = W0 + (alpha/r) B A, merged into W0 and restarted every T steps (partial optimizer "
                  "reset, jagged LR)",
       .paper = "Lialin et al., 2023, arXiv:2307.05695",
       .options = {{"rank", "r, inner dimension of B A (default 128)"},
                   {"alpha", "alpha: the product is scaled by alpha/r (default 32)"},
                   {"reset_every",
                    "T: merge, re-initialise and reset every T optimizer steps (default 5000)"},
                   {"restart_warmup", "steps of linear LR re-warmup after each restart, < T (default 100)"},
                   {"prune_ratio",
                    "fraction of A's and B's Adam moments zeroed at a restart, by magnitude; 1 = full reset "
                    "(default 0.99)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(ReloraOperator::init(slot, config, seed));
           },
       .hooks = relora_hooks});
}

}  // namespace lowrank::train
