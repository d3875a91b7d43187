// The adapter base class, the method registry and factory helpers; see adapter.h.
#include "lowrank/adapt/adapter.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {

at::Tensor TrainableAdapter::delta(const at::Tensor& x, const at::Tensor& base_y,
                                   const nn::BaseOperator& base) const {
  const at::Tensor input = (training_ && dropout_ > 0) ? at::dropout(x, dropout_, true) : x;
  at::Tensor d = compute_delta(input, base_y, base);
  return weight_ == 1 ? d : d * weight_;
}

at::Tensor TrainableAdapter::merged_weight(const nn::BaseOperator& base) const {
  at::Tensor w = base.dense_weight();
  return w + (delta_weight(base) * weight_).to(w.scalar_type());
}

int64_t TrainableAdapter::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : parameters()) n += t.numel();
  return n;
}

const Registry<AdapterMethod>& registry() {
  static const Registry<AdapterMethod> instance =
      Registry<AdapterMethod>::built("adapt", register_builtin_methods);
  return instance;
}

std::string method_for(const AdapterConfig& config) {
  if (config.peft_type == "LORA") {
    if (config.use_dora) return "dora";
    if (config.init_lora_weights.is_string() &&
        config.init_lora_weights.get<std::string>().starts_with("pissa"))
      return "pissa";
    return "lora";
  }
  std::string known;
  for (const MethodInfo& info : registry().list()) {
    const AdapterMethod& m = registry().factory(info.name);
    if (m.peft_type == config.peft_type) return info.name;
    if (known.find(m.peft_type) == std::string::npos) known += (known.empty() ? "" : ", ") + m.peft_type;
  }
  throw Unsupported(str("peft_type \"", config.peft_type, "\" is not supported (supported: ", known, ")"));
}

at::Tensor expect_tensor(const TensorMap& tensors, const std::string& name, at::IntArrayRef shape,
                         const LayerSpec& spec, std::string_view what) {
  auto it = tensors.find(name);
  LR_CHECK(it != tensors.end(), InvalidArgument, what, ": module ", spec.module, " has no tensor \"", name,
           "\"");
  LR_CHECK(it->second.sizes() == shape, InvalidArgument, what, ": ", spec.module, ".", name, " has shape ",
           it->second.sizes(), ", expected ", shape, " for this base layer and rank");
  return it->second.to(spec.device, spec.dtype).contiguous();
}

at::Generator slot_generator(const LayerSpec& spec) {
  // FNV-1a of the module name mixed with the seed: each slot draws independently of the order
  // in which slots are initialised.
  uint64_t h = 1469598103934665603ull ^ spec.seed;
  for (char c : spec.module) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return at::detail::createCPUGenerator(h);
}

at::Tensor kaiming_uniform(int64_t rows, int64_t in, const LayerSpec& spec, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  at::Tensor t = at::empty({rows, in}, at::kFloat);
  t.uniform_(-bound, bound, gen);
  return t.to(spec.device, spec.dtype);
}

}  // namespace lowrank::adapt
