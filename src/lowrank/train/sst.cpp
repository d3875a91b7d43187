// Sparse Spectral Training: W = U diag(σ) Vᵀ with sampled singular vectors; see sst.h.
#include "lowrank/train/sst.h"

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/train/parameterization_internal.h"
#include "lowrank/train/schedule.h"

namespace lowrank::train {

SstOperator::SstOperator(at::Tensor u, at::Tensor sigma, at::Tensor v, at::Tensor indices,
                         at::Tensor u_active, at::Tensor v_active, at::Tensor bias)
    : u_(std::move(u)),
      sigma_(std::move(sigma)),
      v_(std::move(v)),
      indices_(std::move(indices)),
      u_active_(std::move(u_active)),
      v_active_(std::move(v_active)),
      bias_(std::move(bias)) {
  LR_CHECK(u_.dim() == 2 && v_.dim() == 2 && sigma_.dim() == 1 && u_.size(1) == sigma_.size(0) &&
               v_.size(1) == sigma_.size(0),
           InvalidArgument, "sst: need U [out, d], sigma [d] and V [in, d], got ", u_.sizes(), ", ",
           sigma_.sizes(), " and ", v_.sizes());
  const int64_t d = sigma_.size(0);
  LR_CHECK(indices_.dim() == 1 && indices_.scalar_type() == at::kLong && indices_.numel() <= d,
           InvalidArgument, "sst: need int64 indices [r <= ", d, "], got ",
           c10::toString(indices_.scalar_type()), " ", indices_.sizes());
  const int64_t r = indices_.numel();
  LR_CHECK(u_active_.dim() == 2 && v_active_.dim() == 2 && u_active_.size(0) == u_.size(0) &&
               v_active_.size(0) == v_.size(0) && u_active_.size(1) == r && v_active_.size(1) == r,
           InvalidArgument, "sst: need U_I [", u_.size(0), ", ", r, "] and V_I [", v_.size(0), ", ", r,
           "], got ", u_active_.sizes(), " and ", v_active_.sizes());
  LR_CHECK(r == 0 || (indices_.min().item<int64_t>() >= 0 && indices_.max().item<int64_t>() < d &&
                      std::get<0>(at::_unique(indices_)).numel() == r),
           InvalidArgument, "sst: the indices must be distinct and in [0, ", d, ")");
  LR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == u_.size(0)), InvalidArgument,
           "sst: bias of shape ", bias_.sizes(), " for ", u_.size(0), " outputs");
}

at::Tensor sst_probabilities(const at::Tensor& sigma) {
  const at::Tensor s = sigma.detach().to(at::kCPU, at::kDouble).clamp_min(0);
  const int64_t d = s.numel();
  LR_CHECK(d >= 1, InvalidArgument, "sst: no singular values to sample from");
  const double total = s.sum().item<double>();
  // Exploration (uniform) and exploitation (∝ σ) in equal parts; every p(i) >= 1/(2d) > 0, so r
  // distinct indices can always be drawn.
  const at::Tensor weighted = total > 0 ? s / total : at::full_like(s, 1.0 / static_cast<double>(d));
  return (weighted + 1.0 / static_cast<double>(d)) * 0.5;
}

at::Tensor sst_sample(const at::Tensor& sigma, int64_t r, uint64_t seed) {
  const int64_t d = sigma.numel();
  LR_CHECK(r >= 0 && r <= d, InvalidArgument, "sst: cannot draw ", r, " of ", d, " singular vectors");
  if (r == 0) return at::empty({0}, at::TensorOptions().dtype(at::kLong));
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::multinomial(sst_probabilities(sigma), r, /*replacement=*/false, gen);
}

std::shared_ptr<SstOperator> SstOperator::init(const nn::LinearSlot& slot,
                                               const ParameterizationConfig& config, uint64_t seed) {
  const at::Tensor w = slot.base().dense_weight().detach();
  // W = U diag(S) Vh: U [out, d], S [d], Vh [d, in].
  auto [u, s, vh] = at::linalg_svd(w.to(at::kFloat), /*full_matrices=*/false);
  const at::TensorOptions options = w.options().requires_grad(false);
  at::Tensor uf = u.to(options).contiguous(), sf = s.to(options).contiguous(),
             vf = vh.t().to(options).contiguous();
  at::Tensor indices = sst_sample(sf, config.rank, detail::derive_seed(seed, 0)).to(w.device());
  at::Tensor ua = uf.index_select(1, indices), va = vf.index_select(1, indices);
  at::Tensor bias = slot.base().bias();
  return std::make_shared<SstOperator>(std::move(uf), std::move(sf), std::move(vf), std::move(indices),
                                       std::move(ua), std::move(va), bias.defined() ? bias.detach() : bias);
}

at::Tensor SstOperator::forward(const at::Tensor& x) const {
  // Frozen part: all d vectors with the active columns masked out of σ.
  //   x [..., in] -> x V [..., d] -> ⊙ (σ ⊙ mask) -> · Uᵀ [..., out]
  const at::Tensor mask =
      at::ones_like(sigma_, sigma_.options().requires_grad(false)).index_fill(0, indices_, 0);
  at::Tensor y = at::linear(at::linear(x, v_.t()) * (sigma_ * mask), u_, bias_);
  // Active part, value ((x V_I) ⊙ σ_I) U_Iᵀ. With U_I, V_I detached this trains σ_I; the two
  // differences below are exactly zero in value (the same product twice) and give U_I the
  // gradient (∂L/∂W) V_I and V_I the gradient (∂L/∂W)ᵀ U_I: the enhanced gradients, without σ_I.
  const at::Tensor ud = u_active_.detach(), vd = v_active_.detach();
  const at::Tensor xvd = at::linear(x, vd.t());  // [..., r]
  y = y + at::linear(xvd * sigma_.index_select(0, indices_), ud);
  if (at::GradMode::is_enabled() && (u_active_.requires_grad() || v_active_.requires_grad())) {
    const at::Tensor xv_ud = at::linear(xvd, ud);
    y = y + (at::linear(xvd, u_active_) - xv_ud) + (at::linear(at::linear(x, v_active_.t()), ud) - xv_ud);
  }
  return y;
}

nn::NamedTensors SstOperator::trainable() const {
  nn::NamedTensors out{{"sst_sigma", sigma_}, {"sst_u_active", u_active_}, {"sst_v_active", v_active_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

nn::NamedTensors SstOperator::frozen() const {
  return {{"sst_u", u_}, {"sst_v", v_}, {"sst_indices", indices_}};
}

at::Tensor SstOperator::full_u() const {
  return u_.detach().index_copy(1, indices_, u_active_.detach());
}

at::Tensor SstOperator::full_v() const {
  return v_.detach().index_copy(1, indices_, v_active_.detach());
}

at::Tensor SstOperator::dense_weight() const {
  return at::matmul(full_u() * sigma_.detach(), full_v().t());
}

void SstOperator::write_back() const {
  u_.index_copy_(1, indices_, u_active_.detach());
  v_.index_copy_(1, indices_, v_active_.detach());
}

void SstOperator::gather() const {
  u_active_.copy_(u_.index_select(1, indices_));
  v_active_.copy_(v_.index_select(1, indices_));
}

void SstOperator::project() const {
  at::NoGradGuard no_grad;
  sigma_.clamp_min_(0);
  u_active_.div_(u_active_.norm(2, {0}, /*keepdim=*/true).clamp_min(1e-12));
  v_active_.div_(v_active_.norm(2, {0}, /*keepdim=*/true).clamp_min(1e-12));
}

void SstOperator::resample(uint64_t seed) const {
  at::NoGradGuard no_grad;
  write_back();
  indices_.copy_(sst_sample(sigma_, indices_.numel(), seed));
  gather();
}

void SstOperator::reinitialize() const {
  at::NoGradGuard no_grad;
  write_back();
  const at::Tensor w = at::matmul(u_ * sigma_, v_.t());
  auto [u, s, vh] = at::linalg_svd(w, /*full_matrices=*/false);
  u_.copy_(u);
  sigma_.copy_(s);
  v_.copy_(vh.t());
  gather();
}

namespace {

ParameterizationHooks sst_hooks(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    const ParameterizationConfig& config, uint64_t seed) {
  const auto ops = detail::operators_as<SstOperator>(operators, "sst");
  ParameterizationHooks hooks;
  const int64_t round = config.reset_every, every = config.resample_every, warmup = config.restart_warmup;
  hooks.after_update = [ops, round, every, seed, reset_step = config.reset_step](
                           int64_t step, optim::Optimizer& optimizer) {
    const int64_t done = step + 1;
    const bool reinit = done % round == 0;
    const bool redraw = reinit || (every > 0 && done % every == 0);
    for (size_t i = 0; i < ops.size(); ++i) {
      const auto& [name, op] = ops[i];
      op->project();
      if (reinit) {
        op->reinitialize();
        // σ is re-sorted: its moments are stale. The step count is kept by default (see below).
        optimizer.prune_state(name + ".sst_sigma", 1.0, reset_step);
      }
      if (redraw) {
        // A seed per (step, slot): a resumed run draws the same vectors.
        op->resample(detail::derive_seed(detail::derive_seed(seed, static_cast<uint64_t>(done)), i));
        // The paper resets the moments (ReLoRA*-style) but does not say whether Adam's t
        // restarts, and the authors' code is not public: t is kept by default, as ReLoRA's reset
        // keeps it (reset_step restarts it).
        optimizer.prune_state(name + ".sst_u_active", 1.0, reset_step);
        optimizer.prune_state(name + ".sst_v_active", 1.0, reset_step);
      }
    }
    if (reinit) log::debug("sst: SVD re-initialisation after step ", done, " (", ops.size(), " slots)");
  };
  hooks.lr_factor = [round, warmup](int64_t step) { return jagged_lr_factor(step, round, warmup); };
  return hooks;
}

}  // namespace

void register_sst(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "sst",
       .summary =
           "sparse spectral training: W = U diag(sigma) V^T from the SVD of the init, all sigma "
           "trained, r singular vectors sampled by a multinomial with p(i) = (1/d + sigma_i/sum sigma)/2, "
           "re-SVD every T steps",
       .paper = "Zhao et al., 2024, arXiv:2405.15481",
       .options = {{"rank", "r, singular vectors trained at a time (default 128)"},
                   {"reset_every",
                    "T: steps per round; SVD re-initialisation and moment reset after each (default 5000)"},
                   {"resample_every",
                    "steps between fresh draws of the trained vectors; 0 = once per round (default 0)"},
                   {"restart_warmup", "steps of linear LR re-warmup after each round, < T (default 100)"},
                   {"reset_step",
                    "restart Adam's step count t with the moments zeroed at each round and redraw "
                    "(default false, as ReLoRA's reset)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(SstOperator::init(slot, config, seed));
           },
       .hooks = sst_hooks});
}

}  // namespace lowrank::train
