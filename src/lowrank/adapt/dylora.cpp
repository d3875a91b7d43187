// DyLoRA; the equations, the rank sampler and the deviations are in dylora.h.
#include "lowrank/adapt/dylora.h"

#include <algorithm>
#include <cmath>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"
#include "lowrank/core/random.h"

namespace lowrank::adapt {
namespace {

// Separates the rank stream from the trainer's window stream, which hashes the same seed.
constexpr uint64_t kRankStream = 0x44794c6f5241ULL;  // "DyLoRA"

}  // namespace

DyLoraAdapter::DyLoraAdapter(at::Tensor a, at::Tensor b, double alpha, bool rslora, int64_t min_rank,
                             int64_t eval_rank, bool frozen, uint64_t seed)
    : a_(std::move(a)),
      b_(std::move(b)),
      alpha_(alpha),
      rslora_(rslora),
      min_rank_(min_rank),
      eval_rank_(eval_rank),
      frozen_(frozen),
      seed_(seed),
      rank_(eval_rank) {
  LR_CHECK(a_.dim() == 2 && b_.dim() == 2 && a_.size(0) == b_.size(1), InvalidArgument, "dylora: A ",
           a_.sizes(), " and B ", b_.sizes(), " do not form B·A");
  LR_CHECK(min_rank_ >= 1 && min_rank_ <= max_rank(), InvalidArgument, "dylora: min_rank ", min_rank_,
           " must be in [1, r = ", max_rank(), "]");
  LR_CHECK(eval_rank_ >= 1 && eval_rank_ <= max_rank(), InvalidArgument, "dylora: eval_rank ", eval_rank_,
           " must be in [1, r = ", max_rank(), "]");
}

int64_t DyLoraAdapter::sample_rank(uint64_t seed, int64_t step, int64_t min_rank, int64_t max_rank) {
  const uint64_t h = splitmix64(splitmix64(seed ^ kRankStream) ^ static_cast<uint64_t>(step));
  return min_rank + static_cast<int64_t>(h % static_cast<uint64_t>(max_rank - min_rank + 1));
}

double DyLoraAdapter::scaling_at(int64_t rank) const {
  const double r = static_cast<double>(rank);
  return alpha_ / (rslora_ ? std::sqrt(r) : r);
}

void DyLoraAdapter::before_step(int64_t step) {
  rank_ = step < 0 ? eval_rank_ : sample_rank(seed_, step, min_rank_, max_rank());
}

void DyLoraAdapter::set_eval_rank(int64_t rank) {
  eval_rank_ = std::clamp<int64_t>(rank, 1, max_rank());
  rank_ = eval_rank_;
}

std::pair<at::Tensor, at::Tensor> DyLoraAdapter::active() const {
  at::Tensor a = a_.slice(0, 0, rank_);
  at::Tensor b = b_.slice(1, 0, rank_);
  if (frozen_ && training() && rank_ > 1) {
    // Only the b-th row of A and column of B receive a gradient this step.
    a = at::cat({a.slice(0, 0, rank_ - 1).detach(), a.slice(0, rank_ - 1, rank_)}, 0);
    b = at::cat({b.slice(1, 0, rank_ - 1).detach(), b.slice(1, rank_ - 1, rank_)}, 1);
  }
  return {a, b};
}

at::Tensor DyLoraAdapter::compute_delta(const at::Tensor& x, const at::Tensor&,
                                        const nn::BaseOperator&) const {
  auto [a, b] = active();
  return at::linear(at::linear(x, a), b) * scaling_at(rank_);
}

at::Tensor DyLoraAdapter::delta_weight(const nn::BaseOperator&) const {
  auto [a, b] = active();
  return at::matmul(b, a) * scaling_at(rank_);
}

std::optional<nn::LowRankDelta> DyLoraAdapter::low_rank_delta() const {
  if (dropout_active()) return std::nullopt;
  auto [a, b] = active();
  return nn::LowRankDelta{a, b, scaling_at(rank_) * weight()};
}

namespace {

struct DyLoraOptions {
  int64_t min_rank, eval_rank;
  bool frozen;
};

// Options for one slot: eval_rank is clamped to the slot's r (rank_pattern may make it smaller),
// as the official set_rank clamps; min_rank must fit every slot.
DyLoraOptions dylora_options(const LayerSpec& spec) {
  const AdapterConfig& c = *spec.config;
  const int64_t min_rank = c.option<int64_t>("min_rank", 1);
  const int64_t eval_rank = c.option<int64_t>("eval_rank", spec.r);
  LR_CHECK(min_rank >= 1 && min_rank <= spec.r, InvalidArgument, "dylora: option min_rank = ", min_rank,
           " must be in [1, r] (r = ", spec.r, " for ", spec.module, ")");
  LR_CHECK(eval_rank >= 1, InvalidArgument, "dylora: option eval_rank must be >= 1, got ", eval_rank);
  return {min_rank, std::min(eval_rank, spec.r), c.option<bool>("frozen", false)};
}

std::shared_ptr<TrainableAdapter> create_dylora(const LayerSpec& spec, const nn::BaseOperator& base) {
  LR_CHECK(spec.r <= std::min(base.in_features(), base.out_features()), InvalidArgument, "module ",
           spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", std::min(base.in_features(), base.out_features()));
  const DyLoraOptions o = dylora_options(spec);
  at::Generator gen = slot_generator(spec);
  at::Tensor a = kaiming_uniform(spec.r, base.in_features(), spec, gen);
  at::Tensor b = at::zeros({base.out_features(), spec.r}, at::TensorOptions(spec.dtype).device(spec.device));
  return std::make_shared<DyLoraAdapter>(a, b, spec.alpha, spec.config->use_rslora, o.min_rank, o.eval_rank,
                                         o.frozen, spec.seed);
}

std::shared_ptr<TrainableAdapter> load_dylora(const LayerSpec& spec, const nn::BaseOperator& base,
                                              const TensorMap& tensors, std::string_view what) {
  const DyLoraOptions o = dylora_options(spec);
  at::Tensor a = expect_tensor(tensors, "lora_A.weight", {spec.r, base.in_features()}, spec, what);
  at::Tensor b = expect_tensor(tensors, "lora_B.weight", {base.out_features(), spec.r}, spec, what);
  return std::make_shared<DyLoraAdapter>(a, b, spec.alpha, spec.config->use_rslora, o.min_rank, o.eval_rank,
                                         o.frozen, spec.seed);
}

}  // namespace

void register_dylora(Registry<AdapterMethod>& registry) {
  registry.add({"dylora",
                "LoRA trained at a random rank b <= r each step (scale alpha/b), usable at any rank",
                "Valipour et al., 2022, arXiv:2210.07558",
                {{"r", "largest rank r_max (8)"},
                 {"lora_alpha", "alpha (8); scaling alpha/b at rank b (alpha/sqrt(b) with use_rslora)"},
                 {"eval_rank", "rank used outside training steps (r_max; clamped to each slot's r)"},
                 {"min_rank", "smallest sampled rank (1)"},
                 {"frozen", "train only the b-th row/column each step (false)"}}},
               {"LOWRANK_DYLORA", create_dylora, load_dylora, {}});
}

}  // namespace lowrank::adapt
