// Maestro: low-rank ordered decomposition trained with ordered dropout, a hierarchical group lasso
// and progressive shrinking of the rank; see maestro.h.
#include "lowrank/train/maestro.h"

#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <numeric>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/random.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/optim/quantized_state.h"
#include "lowrank/train/parameterization_internal.h"

namespace lowrank::train {

namespace {

// ‖M[b:, :]‖_F for b = 0..r−1 of rows [r, n] (the tail norms of the hierarchical groups), float64.
at::Tensor tail_norms(const at::Tensor& rows) {
  // The row sums in the factor's dtype (no float64 copy of the factor each step), the [r] tail
  // sums in float64.
  const at::Tensor squares = rows.detach().square().sum(1).to(at::kDouble);  // [r]
  return squares.flip(0).cumsum(0).flip(0).sqrt();
}

// Σ_{b<=j} 1/n_b for j = 0..r−1 (1/0 taken as 0): the factor the penalty's gradient puts on row j.
at::Tensor group_coefficients(const at::Tensor& norms) {
  const at::Tensor inverse = at::where(norms > 0, norms.reciprocal(), at::zeros_like(norms));
  return inverse.cumsum(0);
}

}  // namespace

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

void MaestroOperator::set_active_rank(int64_t b) const {
  LR_CHECK(b >= 1 && b <= rank(), InvalidArgument, "maestro: cut-off ", b, " outside [1, ", rank(), "]");
  active_ = b;
}

double MaestroOperator::group_lasso() const {
  return (tail_norms(a_).sum() + tail_norms(b_.t()).sum()).item<double>();
}

void MaestroOperator::add_group_lasso_gradient(double lambda) const {
  at::NoGradGuard no_grad;
  // ∂/∂A[j] = A[j]·Σ_{b<=j} 1/‖A[b:]‖; B's columns the same way.
  const at::Tensor ca = group_coefficients(tail_norms(a_)).mul(lambda).to(a_.scalar_type()).to(a_.device());
  const at::Tensor cb =
      group_coefficients(tail_norms(b_.t())).mul(lambda).to(b_.scalar_type()).to(b_.device());
  for (const auto& [param, grad] :
       {std::pair{&a_, a_.detach() * ca.unsqueeze(1)}, std::pair{&b_, b_.detach() * cb.unsqueeze(0)}}) {
    if (param->grad().defined())
      param->mutable_grad().add_(grad);
    else
      param->mutable_grad() = grad;
  }
}

at::Tensor MaestroOperator::importance() const {
  return (tail_norms(a_) * tail_norms(b_.t())).to(at::kCPU);
}

void MaestroOperator::shrink(int64_t k) const {
  LR_CHECK(k >= 1 && k <= rank(), InvalidArgument, "maestro: cannot shrink rank ", rank(), " to ", k);
  // A live autograd graph through B or A keeps their gradient accumulators, which would still
  // expect the old shapes.
  LR_CHECK(!torch::autograd::impl::try_get_grad_accumulator(a_) &&
               !torch::autograd::impl::try_get_grad_accumulator(b_),
           InvalidArgument, "maestro: cannot shrink while an autograd graph holds the factors");
  at::NoGradGuard no_grad;
  // set_data keeps the tensor object (its autograd flag and hooks) that the model, the trainer and
  // the optimizer share, and swaps its storage for the kept components.
  a_.mutable_grad().reset();
  b_.mutable_grad().reset();
  a_.set_data(a_.detach().narrow(0, 0, k).clone());
  b_.set_data(b_.detach().narrow(1, 0, k).clone());
  active_ = k;
}

std::shared_ptr<MaestroOperator> MaestroOperator::truncate(int64_t b) const {
  LR_CHECK(b >= 1 && b <= rank(), InvalidArgument, "maestro: cannot truncate rank ", rank(), " to ", b);
  return std::make_shared<MaestroOperator>(b_.detach().narrow(1, 0, b).clone(),
                                           a_.detach().narrow(0, 0, b).clone(),
                                           bias_.defined() ? bias_.detach().clone() : bias_);
}

std::vector<int64_t> maestro_cutoffs(const std::string& sampler, uint64_t seed, int64_t step,
                                     const std::vector<int64_t>& ranks) {
  std::vector<int64_t> cut = ranks;
  const uint64_t step_seed = detail::derive_seed(seed, static_cast<uint64_t>(step));
  if (sampler == "across_layers") {
    for (size_t i = 0; i < ranks.size(); ++i)
      cut[i] = 1 + static_cast<int64_t>(detail::derive_seed(step_seed, i) % static_cast<uint64_t>(ranks[i]));
    return cut;
  }
  LR_CHECK(sampler == "per_layer", InvalidArgument, "maestro: unknown sampler \"", sampler,
           "\" (per_layer, across_layers)");
  const int64_t pairs = std::accumulate(ranks.begin(), ranks.end(), int64_t{0});
  if (pairs == 0) return cut;
  // The pair index, then the slot it falls in and b within it.
  int64_t pick = static_cast<int64_t>(splitmix64(step_seed) % static_cast<uint64_t>(pairs));
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (pick < ranks[i]) {
      cut[i] = pick + 1;
      break;
    }
    pick -= ranks[i];
  }
  return cut;
}

int64_t maestro_kept_rank(const at::Tensor& importance, double threshold) {
  return std::max<int64_t>(1, importance.ge(threshold).sum().item<int64_t>());
}

void cut_adam_moments(optim::Optimizer& optimizer, const std::vector<MomentCut>& cuts) {
  if (cuts.empty()) return;
  std::vector<std::pair<std::string, at::Tensor>> state = optimizer.state_tensors();
  for (const MomentCut& cut : cuts) {
    bool found = false;
    for (auto& [n, t] : state) {
      if (n == cut.name + ".exp_avg" || n == cut.name + ".exp_avg_sq") {
        t = t.narrow(cut.dim, 0, cut.keep).contiguous();
        found = true;
      }
    }
    if (!found) {  // 8-bit moments: dequantise, cut, quantise again
      optim::QuantizedMoments moments;
      moments.read_state(state, cut.name, at::kCPU);
      LR_CHECK(moments.defined(), NotFound, "maestro: the optimizer holds no Adam moments for ", cut.name);
      at::Tensor m, v;
      moments.restore(m, v, at::kFloat);
      moments.keep(m.narrow(cut.dim, 0, cut.keep).contiguous(), v.narrow(cut.dim, 0, cut.keep).contiguous());
      std::erase_if(state, [&](const auto& entry) {
        return entry.first.starts_with(cut.name + ".exp_avg.") ||
               entry.first.starts_with(cut.name + ".exp_avg_sq.");
      });
      moments.append_state(state, cut.name);
    }
  }
  optimizer.load_state(state, optimizer.steps());
}

OrderedJson maestro_ranks(const nn::Model& model) {
  OrderedJson out = OrderedJson::object();
  for (const nn::LinearSlot* s : model.slots())
    if (const auto* op = dynamic_cast<const MaestroOperator*>(&s->base())) out[s->name()] = op->rank();
  return out;
}

namespace {

ParameterizationHooks maestro_hooks(
    const std::vector<std::pair<std::string, std::shared_ptr<ParameterizedOperator>>>& operators,
    const ParameterizationConfig& config, uint64_t seed) {
  const auto ops = detail::operators_as<MaestroOperator>(operators, "maestro");
  ParameterizationHooks hooks;
  hooks.before_step = [ops, seed, sampler = config.sampler, lambda = config.group_lasso](int64_t step) {
    std::vector<int64_t> ranks;
    for (const auto& [name, op] : ops) ranks.push_back(op->rank());
    const std::vector<int64_t> cut = maestro_cutoffs(sampler, seed, step, ranks);
    for (size_t i = 0; i < ops.size(); ++i) {
      ops[i].second->set_active_rank(cut[i]);
      // The penalty's gradient is in place before the micro-batches' loss gradients accumulate
      // onto it (the trainer cleared the gradients), so clipping sees the regularised gradient.
      if (lambda > 0) ops[i].second->add_group_lasso_gradient(lambda);
    }
  };
  hooks.after_update = [ops, every = config.shrink_every, threshold = config.shrink_threshold](
                           int64_t step, optim::Optimizer& optimizer) {
    for (const auto& [name, op] : ops) op->set_active_rank(op->rank());
    if (every <= 0 || (step + 1) % every != 0) return;
    std::vector<MomentCut> cuts;
    int64_t before = 0, after = 0;
    for (const auto& [name, op] : ops) {
      const int64_t r = op->rank();
      const int64_t k = maestro_kept_rank(op->importance(), threshold);
      before += r;
      after += k;
      if (k == r) continue;
      op->shrink(k);
      cuts.push_back({name + ".lowrank_a", 0, k});
      cuts.push_back({name + ".lowrank_b", 1, k});
      log::info("maestro: ", name, " rank ", r, " -> ", k, " after step ", step + 1);
    }
    cut_adam_moments(optimizer, cuts);
    if (!cuts.empty()) log::info("maestro: total rank ", before, " -> ", after, " after step ", step + 1);
  };
  // Resuming a run that shrank: its checkpoint holds fewer components than a fresh operator.
  hooks.reshape = [ops](const std::string& tensor, const at::Tensor& saved) {
    for (const auto& [name, op] : ops) {
      if (tensor == name + ".lowrank_a" && saved.dim() == 2) op->shrink(std::min(saved.size(0), op->rank()));
      if (tensor == name + ".lowrank_b" && saved.dim() == 2) op->shrink(std::min(saved.size(1), op->rank()));
    }
  };
  return hooks;
}

}  // namespace

void register_maestro(Registry<ParameterizationMethod>& registry) {
  registry.add(
      {.name = "maestro",
       .summary = "low-rank ordered decomposition W = B A that discovers each layer's rank: ordered dropout "
                  "over the components, a hierarchical group lasso on them, and progressive shrinking of "
                  "the components whose importance falls below a threshold",
       .paper = "Horvath et al., 2024, ICML, arXiv:2308.14929",
       .options = {{"rank", "r, number of ordered components of B A at the start (default 128)"},
                   {"group_lasso",
                    "lambda_gp: weight of sum_b (||A[b:]||_F + ||B[:, b:]||_F), >= 0 (default 1e-6)"},
                   {"shrink_threshold",
                    "eps: remove component b once ||A[b:]||_F ||B[:, b:]||_F < eps, >= 0 (default 1e-5)"},
                   {"shrink_every", "shrink after every n-th optimizer step, 0: never (default 100)"},
                   {"sampler",
                    "ordered-dropout sampler: per_layer (one slot cut per step, default) or across_layers "
                    "(every slot draws its own cut-off)"}}},
      {.make =
           [](const nn::LinearSlot& slot, const ParameterizationConfig& config, uint64_t seed) {
             return std::shared_ptr<ParameterizedOperator>(MaestroOperator::init(slot, config, seed));
           },
       .hooks = maestro_hooks});
}

}  // namespace lowrank::train
