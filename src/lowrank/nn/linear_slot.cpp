// The linear slot and the dense base operator; see linear_slot.h.
#include "lowrank/nn/linear_slot.h"

#include <algorithm>

#include <ATen/Parallel.h>

#include "lowrank/core/error.h"

namespace lowrank::nn {

DenseOperator::DenseOperator(at::Tensor weight, at::Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)) {
  LR_CHECK(weight_.defined() && weight_.dim() == 2, InvalidArgument,
           "dense operator: weight must be 2-D, got ",
           weight_.defined() ? weight_.sizes() : at::IntArrayRef{});
  if (bias_.defined())
    LR_CHECK(bias_.dim() == 1 && bias_.size(0) == weight_.size(0), InvalidArgument,
             "dense operator: bias shape ", bias_.sizes(), " does not match weight ", weight_.sizes());
}

NamedTensors DenseOperator::tensors() const {
  NamedTensors out{{"weight", weight_}};
  if (bias_.defined()) out.emplace_back("bias", bias_);
  return out;
}

LinearSlot::LinearSlot(std::string name, std::shared_ptr<const BaseOperator> base)
    : name_(std::move(name)), base_(std::move(base)) {
  LR_CHECK(!name_.empty(), InvalidArgument, "linear slot: empty name");
  LR_CHECK(base_ != nullptr, InvalidArgument, "linear slot ", name_, ": null base operator");
}

namespace {

// y + (x·Aᵀ)·Bᵀ with the second product accumulated into y by the GEMM itself (addmm, β = 1): the
// delta is never materialised at full width. Its products are skinny (rank r), so the separate
// passes over y of a materialised delta (write, scale, add) would cost more than the products.
// Adds in place when no gradient is recorded; y must then be contiguous (a view of it is
// updated).
at::Tensor add_low_rank(const at::Tensor& y, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor h = at::linear(x, a);
  const at::Tensor h2 = h.reshape({-1, h.size(-1)});
  if (!at::GradMode::is_enabled()) {
    y.view({-1, y.size(-1)}).addmm_(h2, b.t());
    return y;
  }
  return at::addmm(y.reshape({-1, y.size(-1)}), h2, b.t()).view(y.sizes());
}

// Scale folded into B: [s₁B₁, s₂B₂, …] beside [A₁; A₂; …].
std::pair<at::Tensor, at::Tensor> stacked(const std::vector<LowRankDelta>& deltas) {
  if (deltas.size() == 1) return {deltas[0].a, deltas[0].b * deltas[0].scale};
  std::vector<at::Tensor> as, bs;
  for (const LowRankDelta& d : deltas) {
    as.push_back(d.a);
    bs.push_back(d.b * d.scale);
  }
  return {at::cat(as, 0), at::cat(bs, 1)};
}

}  // namespace

at::Tensor LinearSlot::forward(const at::Tensor& x) const {
  at::Tensor y = base_->forward(x);
  if (!adapters_enabled_ || adapters_.empty()) return y;
  const at::Tensor base_y = y;
  // Adapters that are plain scaled products s·B·A share one pair of GEMMs (x·Aᵀ for all of them
  // at once, the second accumulated into y); every other adapter adds its own delta first, while
  // base_y is still untouched.
  std::vector<LowRankDelta> low_rank;
  std::vector<const Adapter*> fused;
  for (const auto& [adapter_name, adapter] : adapters_)
    if (auto d = adapter->low_rank_delta()) {
      low_rank.push_back(std::move(*d));
      fused.push_back(adapter.get());
    }
  for (const auto& [adapter_name, adapter] : adapters_) {
    if (std::ranges::find(fused, adapter.get()) != fused.end()) continue;
    at::Tensor d = adapter->delta(x, base_y, *base_);
    LR_CHECK(d.sizes() == base_y.sizes(), InvalidArgument, "slot ", name_, ": adapter \"", adapter_name,
             "\" returned shape ", d.sizes(), ", expected ", base_y.sizes());
    y = y + d;
  }
  if (low_rank.empty()) return y;
  const auto [a, b] = stacked(low_rank);
  return add_low_rank(y.contiguous(), x, a, b);
}

at::Tensor LinearSlot::forward(const at::Tensor& x, const AdapterRouting* routing) const {
  if (routing == nullptr) return forward(x);
  const int64_t rows = x.size(0);
  LR_CHECK(static_cast<int64_t>(routing->row_adapter.size()) == rows, InvalidArgument, "slot ", name_,
           ": adapter routing has ", routing->row_adapter.size(), " rows, the input ", rows);
  at::Tensor y = base_->forward(x);
  if (!adapters_enabled_) return y;
  const at::Tensor base_y = y;
  // Without gradients, a low-rank adapter is applied to each run of consecutive rows that use it
  // (the segments of S-LoRA/Punica's SGMV): the run is a view of x and y, so it costs one pair of
  // products at the adapter's own rank, added into y in place, with no gather or scatter. Other
  // adapters, and every adapter while gradients are recorded, gather their rows, first, while
  // base_y is still untouched.
  const bool in_place = !at::GradMode::is_enabled();
  std::vector<std::optional<std::pair<at::Tensor, at::Tensor>>> segment_form(routing->adapters.size());
  for (size_t a = 0; a < routing->adapters.size(); ++a) {
    const Adapter* adapter = this->adapter(routing->adapters[a]);
    if (adapter == nullptr) continue;  // the adapter does not target this slot
    if (in_place)
      if (auto d = adapter->low_rank_delta()) {
        segment_form[a] = stacked({*d});
        continue;
      }
    std::vector<int64_t> members;
    for (int64_t b = 0; b < rows; ++b)
      if (routing->row_adapter[static_cast<size_t>(b)] == static_cast<int64_t>(a)) members.push_back(b);
    if (members.empty()) continue;
    if (static_cast<int64_t>(members.size()) == rows) {
      y = y + adapter->delta(x, base_y, *base_);
      continue;
    }
    const at::Tensor index = at::tensor(members, at::TensorOptions(at::kLong)).to(x.device());
    const at::Tensor d = adapter->delta(x.index_select(0, index), base_y.index_select(0, index), *base_);
    y = y.index_add(0, index, d);
  }
  y = y.contiguous();
  struct Segment {
    int64_t start, length;
    const std::pair<at::Tensor, at::Tensor>* factors;
  };
  std::vector<Segment> segments;
  for (int64_t start = 0; start < rows;) {
    const int64_t id = routing->row_adapter[static_cast<size_t>(start)];
    int64_t end = start + 1;
    while (end < rows && routing->row_adapter[static_cast<size_t>(end)] == id) ++end;
    if (id >= 0 && static_cast<size_t>(id) < segment_form.size() && segment_form[static_cast<size_t>(id)])
      segments.push_back({start, end - start, &*segment_form[static_cast<size_t>(id)]});
    start = end;
  }
  auto apply = [&](const Segment& s) {
    add_low_rank(y.narrow(0, s.start, s.length), x.narrow(0, s.start, s.length), s.factors->first,
                 s.factors->second);
  };
  if (segments.size() < 2 || at::get_num_threads() < 2) {
    for (const Segment& s : segments) apply(s);
    return y;
  }
  // Many small segments: one thread per segment is better than splitting each small product
  // across threads. The segments write disjoint rows of y. Worker threads start without this
  // thread's inference mode, which the in-place additions into y (an inference tensor) need.
  const bool inference = c10::InferenceMode::is_enabled();
  at::parallel_for(0, static_cast<int64_t>(segments.size()), 1, [&](int64_t begin, int64_t end) {
    const c10::InferenceMode inference_guard(inference);
    const at::NoGradGuard no_grad;
    for (int64_t i = begin; i < end; ++i) apply(segments[static_cast<size_t>(i)]);
  });
  return y;
}

std::shared_ptr<const BaseOperator> LinearSlot::replace_base(std::shared_ptr<const BaseOperator> base) {
  LR_CHECK(base != nullptr, InvalidArgument, "slot ", name_, ": null base operator");
  LR_CHECK(base->in_features() == in_features() && base->out_features() == out_features(), InvalidArgument,
           "slot ", name_, ": a ", base->kind(), " operator ", base->out_features(), "x", base->in_features(),
           " cannot replace ", base_->kind(), " ", out_features(), "x", in_features(),
           " (in/out features must match)");
  std::swap(base, base_);
  return base;
}

void LinearSlot::add_adapter(std::string adapter_name, std::shared_ptr<const Adapter> adapter) {
  LR_CHECK(!adapter_name.empty(), InvalidArgument, "slot ", name_, ": empty adapter name");
  LR_CHECK(adapter != nullptr, InvalidArgument, "slot ", name_, ": null adapter \"", adapter_name, "\"");
  LR_CHECK(this->adapter(adapter_name) == nullptr, InvalidArgument, "slot ", name_, ": adapter \"",
           adapter_name, "\" is already attached");
  adapters_.emplace_back(std::move(adapter_name), std::move(adapter));
}

std::shared_ptr<const Adapter> LinearSlot::remove_adapter(std::string_view adapter_name) {
  for (auto it = adapters_.begin(); it != adapters_.end(); ++it) {
    if (it->first != adapter_name) continue;
    std::shared_ptr<const Adapter> out = std::move(it->second);
    adapters_.erase(it);
    return out;
  }
  throw NotFound(str("slot ", name_, ": no adapter \"", adapter_name, "\""));
}

const Adapter* LinearSlot::adapter(std::string_view adapter_name) const {
  for (const auto& [n, a] : adapters_)
    if (n == adapter_name) return a.get();
  return nullptr;
}

std::vector<std::string> LinearSlot::adapter_names() const {
  std::vector<std::string> out;
  for (const auto& [n, a] : adapters_) out.push_back(n);
  return out;
}

}  // namespace lowrank::nn
