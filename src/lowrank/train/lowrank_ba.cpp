// Plain low-rank BA pretraining baseline; see lowrank_ba.h.
#include "lowrank/train/lowrank_ba.h"

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/train/parameterization_internal.h"
#include "lowrank/train/schedule.h"

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

void LowRankBaOperator::refactor() const {
  at::NoGradGuard no_grad;
  const int64_t r = a_.size(0);
  auto [u, s, vh] = at::linalg_svd(at::matmul(b_, a_), /*full_matrices=*/false);
  const at::Tensor root = s.narrow(0, 0, r).sqrt();
  b_.copy_(u.narrow(1, 0, r) * root);
  a_.copy_(vh.narrow(0, 0, r) * root.unsqueeze(1));
}

namespace {

ParameterizationHooks lowrank_hooks(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    const ParameterizationConfig& config, uint64_t) {
  ParameterizationHooks hooks;
  const int64_t every = config.refactor_every, recovery = config.recovery_steps;
  if (every <= 0) return hooks;
  const auto ops = detail::operators_as<LowRankBaOperator>(operators, "lowrank");
  hooks.after_update = [ops, every, reset_step = config.reset_step](int64_t step,
                                                                    optim::Optimizer& optimizer) {
    if ((step + 1) % every != 0) return;
    for (const auto& [name, op] : ops) op->refactor();
    // Momentum reset: every parameter's moments and, by default, step count, as the authors' code
    // rebuilds the optimizer (OptimAI-Lab/Memory_Efficient_Pretraining, torchrun_main_DDP.py: a
    // new torch.optim.AdamW after merge_and_reinit), so bias correction restarts. Float or 8-bit.
    for (const auto& [n, t] : optimizer.state_tensors())
      for (const std::string suffix : {".exp_avg", ".exp_avg.codes"})
        if (n.ends_with(suffix))
          optimizer.prune_state(n.substr(0, n.size() - suffix.size()), 1.0, reset_step);
    log::debug("lowrank: refactorised ", ops.size(), " slots and reset the moments after step ", step + 1);
  };
  // The ramp of the first steps after a refactorisation starts at 0.001× (cosine_quick_recovery).
  hooks.lr_factor = [every, recovery](int64_t step) {
    return jagged_lr_factor(step, every, recovery, 0.001);
  };
  return hooks;
}

}  // namespace

void register_lowrank_ba(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "lowrank",
       .summary = "plain low-rank W = (alpha/r) B A, both factors trained from scratch (baseline)",
       .paper = "Zhao et al., 2024, arXiv:2403.03507 (GaLore, Table 2 'Low-Rank' baseline)",
       .options =
           {{"rank", "r, inner dimension of B A (default 128)"},
            {"alpha", "alpha: the product is scaled by alpha/r (default 32)"},
            {"refactor_every",
             "K: every K steps re-split B A through its SVD and zero all Adam moments (Glentis et al., "
             "2025, arXiv:2505.22922); 0 = off (default 0)"},
            {"recovery_steps", "steps of linear LR ramp from 0.001x after each refactorisation (default 10)"},
            {"reset_step",
             "restart Adam's step count t with the moments at each refactorisation (default true: the "
             "authors' code builds a new AdamW)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(LowRankBaOperator::init(slot, config, seed));
           },
       .hooks = lowrank_hooks,
       .defaults =
           [] {
             ParameterizationConfig c;
             c.reset_step = true;
             return c;
           }()});
}

}  // namespace lowrank::train
