// The parameterisation registry, option parsing, and applying a method to a model's slots; see
// parameterization.h.
#include "lowrank/train/parameterization.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <set>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"
#include "lowrank/train/gradnorm_lorp.h"
#include "lowrank/train/lowrank_ba.h"
#include "lowrank/train/maestro.h"
#include "lowrank/train/parameterization_internal.h"
#include "lowrank/train/relora.h"
#include "lowrank/train/sltrain.h"
#include "lowrank/train/sst.h"
#include "lowrank/train/trp.h"

namespace lowrank::train {

namespace detail {

at::Tensor uniform(at::IntArrayRef sizes, double bound, uint64_t seed, const at::TensorOptions& options) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(at::kFloat));
  t.uniform_(-bound, bound, gen);
  return t.to(options.device(), options.dtype());
}

at::Tensor kaiming_uniform(int64_t rows, int64_t fan_in, uint64_t seed, const at::TensorOptions& options) {
  // kaiming_uniform_(a=√5): gain √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√fan_in.
  return uniform({rows, fan_in}, 1.0 / std::sqrt(static_cast<double>(fan_in)), seed, options);
}

uint64_t derive_seed(uint64_t seed, uint64_t counter) {
  return splitmix64(splitmix64(seed) ^ (counter + 1));
}

}  // namespace detail

OrderedJson ParameterizationConfig::to_json() const {
  return OrderedJson{{"rank", rank},
                     {"alpha", alpha},
                     {"density", density},
                     {"reset_every", reset_every},
                     {"restart_warmup", restart_warmup},
                     {"prune_ratio", prune_ratio},
                     {"resample_every", resample_every},
                     {"nuclear_weight", nuclear_weight},
                     {"energy", energy},
                     {"prune_every", prune_every},
                     {"refactor_every", refactor_every},
                     {"recovery_steps", recovery_steps},
                     {"reset_step", reset_step},
                     {"group_lasso", group_lasso},
                     {"shrink_threshold", shrink_threshold},
                     {"shrink_every", shrink_every},
                     {"sampler", sampler}};
}

nn::NamedTensors ParameterizedOperator::tensors() const {
  nn::NamedTensors out = trainable();
  for (auto& t : frozen()) out.push_back(std::move(t));
  return out;
}

void register_builtin_parameterizations(Registry<ParameterizationMethod>& registry) {
  register_lowrank_ba(registry);
  register_sltrain(registry);
  register_relora(registry);
  register_sst(registry);
  register_trp(registry);
  register_maestro(registry);
  register_gradnorm_lorp(registry);
}

const Registry<ParameterizationMethod>& parameterization_registry() {
  static Registry<ParameterizationMethod> registry("parameterization");
  static std::once_flag once;
  std::call_once(once, [] { register_builtin_parameterizations(registry); });
  return registry;
}

ParameterizationConfig parameterization_config(const std::string& method, const Json& options) {
  const MethodInfo& info = parameterization_registry().info(method);  // NotFound lists the names
  const std::string what = str("parameterization ", method);
  LR_CHECK(options.is_object(), InvalidArgument, what, ": options must be a JSON object, got ",
           options.dump());
  std::string known;
  for (const auto& [k, _] : info.options) known += (known.empty() ? "" : ", ") + k;
  for (const auto& [key, _] : options.items()) {
    const bool ok =
        std::any_of(info.options.begin(), info.options.end(), [&](const auto& o) { return o.first == key; });
    LR_CHECK(ok, InvalidArgument, what, ": unknown option \"", key, "\" (it takes: ", known, ")");
  }
  ParameterizationConfig c =
      parameterization_registry().factory(method).defaults.value_or(ParameterizationConfig{});
  c.rank = json_get_or<int64_t>(options, "rank", c.rank, what);
  c.alpha = json_get_or<double>(options, "alpha", c.alpha, what);
  c.density = json_get_or<double>(options, "density", c.density, what);
  c.reset_every = json_get_or<int64_t>(options, "reset_every", c.reset_every, what);
  c.restart_warmup = json_get_or<int64_t>(options, "restart_warmup", c.restart_warmup, what);
  c.prune_ratio = json_get_or<double>(options, "prune_ratio", c.prune_ratio, what);
  c.resample_every = json_get_or<int64_t>(options, "resample_every", c.resample_every, what);
  c.nuclear_weight = json_get_or<double>(options, "nuclear_weight", c.nuclear_weight, what);
  c.energy = json_get_or<double>(options, "energy", c.energy, what);
  c.prune_every = json_get_or<int64_t>(options, "prune_every", c.prune_every, what);
  c.refactor_every = json_get_or<int64_t>(options, "refactor_every", c.refactor_every, what);
  c.recovery_steps = json_get_or<int64_t>(options, "recovery_steps", c.recovery_steps, what);
  c.reset_step = json_get_or<bool>(options, "reset_step", c.reset_step, what);
  c.group_lasso = json_get_or<double>(options, "group_lasso", c.group_lasso, what);
  c.shrink_threshold = json_get_or<double>(options, "shrink_threshold", c.shrink_threshold, what);
  c.shrink_every = json_get_or<int64_t>(options, "shrink_every", c.shrink_every, what);
  c.sampler = json_get_or<std::string>(options, "sampler", c.sampler, what);
  LR_CHECK(c.rank >= 1, InvalidArgument, what, ": rank must be >= 1, got ", c.rank);
  LR_CHECK(std::isfinite(c.alpha) && c.alpha > 0, InvalidArgument, what, ": alpha must be > 0, got ",
           c.alpha);
  LR_CHECK(c.density > 0 && c.density <= 1, InvalidArgument, what, ": density must be in (0, 1], got ",
           c.density);
  LR_CHECK(c.reset_every >= 1, InvalidArgument, what, ": reset_every must be >= 1, got ", c.reset_every);
  LR_CHECK(c.restart_warmup >= 0 && c.restart_warmup < c.reset_every, InvalidArgument, what,
           ": restart_warmup must be in [0, reset_every = ", c.reset_every, "), got ", c.restart_warmup);
  LR_CHECK(c.prune_ratio >= 0 && c.prune_ratio <= 1, InvalidArgument, what,
           ": prune_ratio must be in [0, 1], got ", c.prune_ratio);
  LR_CHECK(c.resample_every >= 0, InvalidArgument, what, ": resample_every must be >= 0, got ",
           c.resample_every);
  LR_CHECK(std::isfinite(c.nuclear_weight) && c.nuclear_weight >= 0, InvalidArgument, what,
           ": nuclear_weight must be >= 0, got ", c.nuclear_weight);
  LR_CHECK(c.energy > 0 && c.energy <= 1, InvalidArgument, what, ": energy must be in (0, 1], got ",
           c.energy);
  LR_CHECK(c.prune_every >= 1, InvalidArgument, what, ": prune_every must be >= 1, got ", c.prune_every);
  LR_CHECK(c.refactor_every >= 0, InvalidArgument, what, ": refactor_every must be >= 0, got ",
           c.refactor_every);
  LR_CHECK(c.recovery_steps >= 0 && (c.refactor_every == 0 || c.recovery_steps < c.refactor_every),
           InvalidArgument, what, ": recovery_steps must be in [0, refactor_every = ", c.refactor_every,
           "), got ", c.recovery_steps);
  LR_CHECK(std::isfinite(c.group_lasso) && c.group_lasso >= 0, InvalidArgument, what,
           ": group_lasso must be >= 0, got ", c.group_lasso);
  LR_CHECK(std::isfinite(c.shrink_threshold) && c.shrink_threshold >= 0, InvalidArgument, what,
           ": shrink_threshold must be >= 0, got ", c.shrink_threshold);
  LR_CHECK(c.shrink_every >= 0, InvalidArgument, what, ": shrink_every must be >= 0, got ", c.shrink_every);
  LR_CHECK(c.sampler == "per_layer" || c.sampler == "across_layers", InvalidArgument, what,
           ": sampler must be per_layer or across_layers, got \"", c.sampler, "\"");
  return c;
}

bool is_parameterized_slot(const std::string& slot_name) {
  // The decoder layers' names as each trunk calls them (nn/model.cpp, layer_prefix): the Llama
  // family model.layers.N.*, transformers' MambaModel backbone.layers.N.* (its mixer.* projections).
  const bool in_a_layer = slot_name.starts_with("model.layers.") || slot_name.starts_with("backbone.layers.");
  return in_a_layer &&
         (slot_name.find(".self_attn.") != std::string::npos ||
          slot_name.find(".mixer.") != std::string::npos || slot_name.find(".mlp.") != std::string::npos);
}

void check_parameterization(const std::string& method, const Json& options,
                            const std::vector<std::tuple<std::string, int64_t, int64_t>>& slots) {
  const ParameterizationConfig c = parameterization_config(method, options);
  const MethodInfo& info = parameterization_registry().info(method);
  const bool takes_rank =
      std::any_of(info.options.begin(), info.options.end(), [](const auto& o) { return o.first == "rank"; });
  for (const auto& [name, out, in] : slots) {
    LR_CHECK(!takes_rank || c.rank <= std::min(out, in), InvalidArgument, "parameterization ", method,
             ": rank ", c.rank, " exceeds min(out, in) = ", std::min(out, in), " of slot ", name, " [", out,
             " x ", in, "]");
    if (method == "sltrain")
      LR_CHECK(static_cast<int64_t>(std::floor(c.density * static_cast<double>(out * in))) >= 1,
               InvalidArgument, "parameterization sltrain: density ", c.density,
               " gives an empty support for slot ", name, " [", out, " x ", in, "]");
  }
}

AppliedParameterization apply_parameterization(nn::Model& model, const std::string& method,
                                               const Json& options, uint64_t seed) {
  std::vector<nn::LinearSlot*> targets;
  std::vector<std::tuple<std::string, int64_t, int64_t>> shapes;
  for (nn::LinearSlot* s : model.slots()) {
    if (!is_parameterized_slot(s->name())) continue;
    targets.push_back(s);
    shapes.emplace_back(s->name(), s->out_features(), s->in_features());
  }
  check_parameterization(method, options, shapes);
  LR_CHECK(!targets.empty(), InvalidArgument, "parameterization ", method,
           ": the model has no attention/MLP slots to parameterise");
  for (const nn::LinearSlot* s : targets) {
    LR_CHECK(s->base().kind() == "dense", InvalidArgument, "parameterization ", method, ": slot ", s->name(),
             " holds a ", s->base().kind(), " base, not a dense one (already parameterised or compressed)");
    LR_CHECK(!s->has_adapters(), InvalidArgument, "parameterization ", method, ": slot ", s->name(),
             " has adapters attached");
  }
  const ParameterizationMethod& m = parameterization_registry().factory(method);
  AppliedParameterization applied;
  applied.method = method;
  applied.config = parameterization_config(method, options);
  std::set<std::string> frozen_names;
  for (size_t i = 0; i < targets.size(); ++i) {
    nn::LinearSlot& slot = *targets[i];
    std::shared_ptr<ParameterizedOperator> op = m.make(slot, applied.config, detail::derive_seed(seed, i));
    for (const auto& [n, _] : op->frozen()) frozen_names.insert(slot.name() + "." + n);
    slot.replace_base(op);
    applied.operators.emplace_back(slot.name(), std::move(op));
  }
  for (auto& [name, t] : model.named_tensors()) {
    if (frozen_names.count(name)) {
      applied.target.frozen.emplace_back(name, t);
    } else {
      at::Tensor p = t;
      if (!p.requires_grad()) p.requires_grad_(true);
      applied.target.params.emplace_back(name, p);
    }
  }
  if (m.hooks) {
    ParameterizationHooks hooks =
        m.hooks(applied.operators, applied.config, detail::derive_seed(seed, targets.size()));
    applied.target.before_step = std::move(hooks.before_step);
    applied.target.after_update = std::move(hooks.after_update);
    applied.target.lr_factor = std::move(hooks.lr_factor);
    applied.target.reshape = std::move(hooks.reshape);
  }
  return applied;
}

void densify(nn::Model& model) {
  at::NoGradGuard no_grad;
  for (nn::LinearSlot* s : model.slots()) {
    if (s->base().kind() == "dense") continue;
    at::Tensor w = s->base().dense_weight().detach().clone();
    at::Tensor b = s->base().bias();
    s->replace_base(std::make_shared<nn::DenseOperator>(std::move(w), b.defined() ? b.detach().clone() : b));
  }
}

}  // namespace lowrank::train
