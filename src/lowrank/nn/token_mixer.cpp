// The token-mixer interface's defaults and the mixer registry; see token_mixer.h.
#include "lowrank/nn/token_mixer.h"

#include <mutex>
#include <shared_mutex>

#include "lowrank/core/error.h"
#include "lowrank/nn/attention.h"

namespace lowrank::nn {

std::unique_ptr<MixerState> TokenMixer::new_state(int64_t) const {
  throw Unsupported(str("mixer \"", name(), "\" has no constant-size decode state (new_state/step)"));
}

at::Tensor TokenMixer::step(const at::Tensor&, MixerState&, const MixerContext&) const {
  throw Unsupported(str("mixer \"", name(), "\" has no constant-size decode state (new_state/step)"));
}

at::Tensor TokenMixer::prefill(const at::Tensor& x, MixerState& state, const MixerContext& context) const {
  const int64_t T = x.size(1);
  // One column of a [B, T, ...] tensor of the context, or undefined when the context has none.
  auto column = [](const at::Tensor& t, int64_t i) { return t.defined() ? t.narrow(1, i, 1) : t; };
  std::vector<at::Tensor> rows;
  rows.reserve(static_cast<size_t>(T));
  MixerContext one;
  one.grid = context.grid;
  one.routing = context.routing;
  for (int64_t i = 0; i < T; ++i) {
    one.valid = column(context.valid, i);
    one.positions = column(context.positions, i);
    one.cos = column(context.cos, i);
    one.sin = column(context.sin, i);
    one.past = context.past + i;
    rows.push_back(step(x.narrow(1, i, 1), state, one));
  }
  return T == 1 ? rows.front() : at::cat(rows, 1);
}

std::vector<const LinearSlot*> TokenMixer::slots() const {
  std::vector<const LinearSlot*> out;
  // slots() only lists the mixer's members; constness here is that of the listing.
  for (LinearSlot* s : const_cast<TokenMixer*>(this)->slots()) out.push_back(s);
  return out;
}

struct MixerRegistry::Impl {
  mutable std::shared_mutex mutex;
  Registry<MixerFactory> entries{"mix"};
};

MixerRegistry::MixerRegistry() : impl_(std::make_shared<Impl>()) {}

void MixerRegistry::add(MethodInfo info, MixerFactory factory) {
  LR_CHECK(factory != nullptr, InvalidArgument, "mix registry: mixer \"", info.name, "\" has no factory");
  std::unique_lock lock(impl_->mutex);
  impl_->entries.add(std::move(info), std::move(factory));
}

bool MixerRegistry::contains(const std::string& name) const {
  std::shared_lock lock(impl_->mutex);
  return impl_->entries.contains(name);
}

MixerFactory MixerRegistry::factory(const std::string& name) const {
  std::shared_lock lock(impl_->mutex);
  return impl_->entries.factory(name);  // a copy: the entry may move when another is added
}

std::vector<MethodInfo> MixerRegistry::list() const {
  std::shared_lock lock(impl_->mutex);
  return impl_->entries.list();
}

std::string MixerRegistry::known() const {
  std::string out;
  for (const MethodInfo& m : list()) out += str(out.empty() ? "" : ", ", m.name);
  return out;
}

MixerRegistry& mixer_registry() {
  static MixerRegistry instance = [] {
    MixerRegistry r;
    register_attention_mixer(r);
    return r;
  }();
  return instance;
}

std::string mixer_prefix(const std::string& mixer, int64_t layer) {
  return str("model.layers.", layer, mixer == "attention" ? ".self_attn" : ".mixer");
}

at::Tensor initial_tensor(ParamInit init, at::IntArrayRef shape, const at::Tensor& value,
                          at::ScalarType dtype,
                          const std::function<at::Tensor(at::IntArrayRef shape)>& normal) {
  switch (init) {
    case ParamInit::kZeros:
      return at::zeros(shape, dtype);
    case ParamInit::kOnes:
      return at::ones(shape, dtype);
    case ParamInit::kValue:
      LR_CHECK(value.defined() && value.sizes() == shape, InternalError, "initial value of shape ",
               value.defined() ? value.sizes() : at::IntArrayRef{}, ", expected ", shape);
      return value.detach().to(dtype).clone();
    case ParamInit::kNormal:
      break;
  }
  return normal(shape).to(dtype);
}

}  // namespace lowrank::nn
