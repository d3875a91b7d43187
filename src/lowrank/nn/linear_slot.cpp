// The linear slot and the dense base operator; see linear_slot.h.
#include "lowrank/nn/linear_slot.h"

#include "lowrank/core/error.h"
#include "lowrank/nn/adapter_paths.h"
#include "lowrank/nn/routed_adapter_source.h"
#include "lowrank/nn/shared_input.h"
#include "lowrank/ops/gemv.h"

namespace lowrank::nn {

DenseOperator::DenseOperator(at::Tensor weight, at::Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)) {
  LR_CHECK(weight_.defined() && weight_.dim() == 2, InvalidArgument,
           "dense operator: weight must be 2-D, got ",
           weight_.defined() ? weight_.sizes() : at::IntArrayRef{});
  if (bias_.defined())
    LR_CHECK(bias_.dim() == 1 && bias_.size(0) == weight_.size(0), InvalidArgument,
             "dense operator: bias shape ", bias_.sizes(), " does not match weight ", weight_.sizes());
  const at::ScalarType t = weight_.scalar_type();
  row_product_ =
      weight_.device().is_cpu() && weight_.is_contiguous() && (t == at::kFloat || t == at::kBFloat16) &&
      (!bias_.defined() || (bias_.scalar_type() == t && bias_.is_contiguous() && bias_.device().is_cpu()));
}

void BaseOperator::row_product(const float*, int64_t, int64_t, float*) const {
  throw InternalError(
      str("operator \"", kind(), "\" has no row product (the fused decode step checks first)"));
}

void DenseOperator::row_product(const float* x, int64_t begin, int64_t end, float* y) const {
  const ops::ElementType type =
      weight_.scalar_type() == at::kFloat ? ops::ElementType::kF32 : ops::ElementType::kBF16;
  ops::gemv_rows(type, weight_.const_data_ptr(), weight_.size(1), x,
                 bias_.defined() ? bias_.const_data_ptr() : nullptr, begin, end, y);
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
  const LinearSlot* self = this;
  return forward_shared_input({&self, 1}, x)[0];
}

at::Tensor LinearSlot::forward(const at::Tensor& x, const AdapterRouting* routing) const {
  const LinearSlot* self = this;
  return forward_shared_input({&self, 1}, x, routing)[0];
}

std::vector<at::Tensor> LinearSlot::forward_shared_input(std::span<const LinearSlot* const> slots,
                                                         const at::Tensor& x, const AdapterRouting* routing) {
  std::vector<at::Tensor> ys;
  {
    // Base operators that share work derived from x alone (SVDQuant's x̂·L₂ᵀ) do it once.
    std::optional<SharedInputScope> scope;
    if (slots.size() > 1) scope.emplace(x);
    for (const LinearSlot* slot : slots) ys.push_back(slot->base_->forward(x));
  }
  if (routing != nullptr)
    if (const RoutedAdapterSource* source = RoutedAdapterScope::current()) {
      std::vector<std::string_view> names;
      for (const LinearSlot* slot : slots) names.push_back(slot->name_);
      source->add(names, x, *routing, ys);
      return ys;
    }
  std::vector<SlotAdapters> views;
  views.reserve(slots.size());
  for (const LinearSlot* slot : slots) {
    SlotAdapters& view = views.emplace_back();
    view.name = slot->name_;
    view.base = slot->base_.get();
    view.enabled = slot->adapters_enabled_;
    for (const auto& [adapter_name, adapter] : slot->adapters_)
      view.adapters.emplace_back(adapter_name, adapter.get());
  }
  if (routing == nullptr)
    add_adapters(views, x, ys);
  else
    add_routed_adapters(views, x, *routing, ys);
  return ys;
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
