// The linear slot and the dense base operator; see linear_slot.h.
#include "lowrank/nn/linear_slot.h"

#include <algorithm>

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

at::Tensor LinearSlot::forward(const at::Tensor& x) const {
  at::Tensor y = base_->forward(x);
  if (!adapters_enabled_ || adapters_.empty()) return y;
  const at::Tensor base_y = y;
  // Two or more adapters that are plain scaled products B·A share one pair of GEMMs (x·Aᵀ for
  // all of them at once); every other adapter adds its own delta.
  std::vector<LowRankDelta> low_rank;
  std::vector<const Adapter*> fused;
  if (adapters_.size() > 1)
    for (const auto& [adapter_name, adapter] : adapters_)
      if (auto d = adapter->low_rank_delta()) {
        low_rank.push_back(std::move(*d));
        fused.push_back(adapter.get());
      }
  const bool fuse = low_rank.size() > 1;
  for (const auto& [adapter_name, adapter] : adapters_) {
    if (fuse && std::ranges::find(fused, adapter.get()) != fused.end()) continue;
    at::Tensor d = adapter->delta(x, base_y, *base_);
    LR_CHECK(d.sizes() == base_y.sizes(), InvalidArgument, "slot ", name_, ": adapter \"", adapter_name,
             "\" returned shape ", d.sizes(), ", expected ", base_y.sizes());
    y = y + d;
  }
  if (fuse) {
    std::vector<at::Tensor> as, bs;
    for (const LowRankDelta& d : low_rank) {
      as.push_back(d.a);
      bs.push_back(d.b * d.scale);
    }
    y = y + at::linear(at::linear(x, at::cat(as, 0)), at::cat(bs, 1));
  }
  return y;
}

at::Tensor LinearSlot::forward(const at::Tensor& x, const AdapterRouting* routing) const {
  if (routing == nullptr) return forward(x);
  const int64_t rows = x.size(0);
  LR_CHECK(static_cast<int64_t>(routing->row_adapter.size()) == rows, InvalidArgument, "slot ", name_,
           ": adapter routing has ", routing->row_adapter.size(), " rows, the input ", rows);
  at::Tensor y = base_->forward(x);
  if (!adapters_enabled_) return y;
  const at::Tensor base_y = y;
  for (size_t a = 0; a < routing->adapters.size(); ++a) {
    std::vector<int64_t> members;
    for (int64_t b = 0; b < rows; ++b)
      if (routing->row_adapter[static_cast<size_t>(b)] == static_cast<int64_t>(a)) members.push_back(b);
    if (members.empty()) continue;
    const Adapter* adapter = this->adapter(routing->adapters[a]);
    if (adapter == nullptr) continue;  // the adapter does not target this slot
    if (static_cast<int64_t>(members.size()) == rows) {
      y = y + adapter->delta(x, base_y, *base_);
      continue;
    }
    const at::Tensor index = at::tensor(members, at::TensorOptions(at::kLong)).to(x.device());
    const at::Tensor d = adapter->delta(x.index_select(0, index), base_y.index_select(0, index), *base_);
    y = y.index_add(0, index, d);
  }
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
