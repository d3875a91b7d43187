// AdamW (Loshchilov & Hutter, 2019, Algorithm 2) on the shared Adam core; see adamw.h.
#include "lowrank/optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "lowrank/core/error.h"

namespace lowrank::optim {

OrderedJson AdamConfig::to_json() const {
  return OrderedJson{{"beta1", beta1},
                     {"beta2", beta2},
                     {"eps", eps},
                     {"weight_decay", weight_decay},
                     {"bias_correction", bias_correction}};
}

AdamConfig AdamConfig::from_json(const Json& j, std::string_view what) {
  AdamConfig c;
  c.beta1 = json_get_or<double>(j, "beta1", c.beta1, what);
  c.beta2 = json_get_or<double>(j, "beta2", c.beta2, what);
  c.eps = json_get_or<double>(j, "eps", c.eps, what);
  c.weight_decay = json_get_or<double>(j, "weight_decay", c.weight_decay, what);
  c.bias_correction = json_get_or<bool>(j, "bias_correction", c.bias_correction, what);
  LR_CHECK(c.beta1 >= 0 && c.beta1 < 1, InvalidArgument, what, ": beta1 must be in [0, 1), got ", c.beta1);
  LR_CHECK(c.beta2 >= 0 && c.beta2 < 1, InvalidArgument, what, ": beta2 must be in [0, 1), got ", c.beta2);
  LR_CHECK(c.eps > 0, InvalidArgument, what, ": eps must be > 0, got ", c.eps);
  LR_CHECK(c.weight_decay >= 0, InvalidArgument, what, ": weight_decay must be >= 0, got ", c.weight_decay);
  return c;
}

void adam_update(at::Tensor& param, const at::Tensor& grad, AdamState& state, const AdamConfig& config,
                 double lr) {
  LR_CHECK(param.sizes() == grad.sizes(), InvalidArgument, "adam: gradient shape ", grad.sizes(),
           " differs from parameter shape ", param.sizes());
  at::NoGradGuard no_grad;
  // Decoupled weight decay (Alg. 2, line 12: the λθ term outside the adaptive step).
  if (config.weight_decay != 0) param.mul_(1 - lr * config.weight_decay);
  const auto [bias_correction1, bias_correction2] = update_moments(state, grad, config);
  // Bias-corrected step (Alg. 2, lines 9-12): m̂ / (sqrt(v̂) + ε).
  at::Tensor denom = (state.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(config.eps);
  param.addcdiv_(state.exp_avg, denom, -lr / bias_correction1);
}

std::pair<double, double> update_moments(AdamState& state, const at::Tensor& grad, const AdamConfig& config) {
  at::NoGradGuard no_grad;
  if (!state.exp_avg.defined()) {
    state.exp_avg = at::zeros_like(grad);
    state.exp_avg_sq = at::zeros_like(grad);
  }
  state.step += 1;
  // Moments (Alg. 2, lines 7-8), in libtorch's operation order.
  state.exp_avg.mul_(config.beta1).add_(grad, 1 - config.beta1);
  state.exp_avg_sq.mul_(config.beta2).addcmul_(grad, grad, 1 - config.beta2);
  if (!config.bias_correction) return {1.0, 1.0};
  return {1 - std::pow(config.beta1, static_cast<double>(state.step)),
          1 - std::pow(config.beta2, static_cast<double>(state.step))};
}

AdamWStateOptions AdamWStateOptions::from_json(const Json& j, std::string_view what) {
  LR_CHECK(j.is_object(), InvalidArgument, what, ": expected a JSON object");
  for (const auto& [key, value] : j.items())
    LR_CHECK(key == "state_bits" || key == "min_8bit_size", InvalidArgument, what,
             ": adamw takes state_bits and ", "min_8bit_size, not \"", key,
             "\" (the projection options belong to a low-rank optimizer)");
  AdamWStateOptions o;
  o.state_bits = static_cast<int>(json_get_or<int64_t>(j, "state_bits", o.state_bits, what));
  o.min_8bit_size = json_get_or<int64_t>(j, "min_8bit_size", o.min_8bit_size, what);
  LR_CHECK(o.state_bits == 8 || o.state_bits == 32, InvalidArgument, what,
           ": state_bits must be 8 or 32, got ", o.state_bits);
  LR_CHECK(o.min_8bit_size >= 0, InvalidArgument, what, ": min_8bit_size must be >= 0, got ",
           o.min_8bit_size);
  return o;
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamConfig config,
             AdamWStateOptions state_options)
    : params_(std::move(params)), states_(params_.size()), moments8_(params_.size()), config_(config) {
  for (const auto& [name, p] : params_) {
    decay_.push_back(p.dim() >= 2);
    eight_bit_.push_back(state_options.state_bits == 8 && p.numel() >= state_options.min_8bit_size);
  }
  lr_scale_.assign(params_.size(), 1.0);
  weight_decay_.assign(params_.size(), std::nullopt);
}

std::vector<size_t> override_indices(const std::vector<std::string>& names,
                                     const std::vector<ParamOverride>& overrides,
                                     std::string_view optimizer) {
  std::vector<size_t> out;
  for (const ParamOverride& o : overrides) {
    const auto it = std::find(names.begin(), names.end(), o.name);
    LR_CHECK(it != names.end(), NotFound, optimizer, ": a parameter override names \"", o.name,
             "\", which is not among the trained tensors");
    LR_CHECK(o.lr_scale >= 0 && std::isfinite(o.lr_scale), InvalidArgument, optimizer, ": parameter ", o.name,
             ": learning-rate scale must be >= 0, got ", o.lr_scale);
    LR_CHECK(!o.weight_decay || *o.weight_decay >= 0, InvalidArgument, optimizer, ": parameter ", o.name,
             ": weight decay must be >= 0, got ", o.weight_decay.value_or(0));
    out.push_back(static_cast<size_t>(it - names.begin()));
  }
  return out;
}

void AdamW::set_overrides(const std::vector<ParamOverride>& overrides) {
  std::vector<std::string> names;
  for (const auto& [name, p] : params_) names.push_back(name);
  const std::vector<size_t> index = override_indices(names, overrides, "AdamW");
  lr_scale_.assign(params_.size(), 1.0);
  weight_decay_.assign(params_.size(), std::nullopt);
  for (size_t k = 0; k < overrides.size(); ++k) {
    lr_scale_[index[k]] = overrides[k].lr_scale;
    weight_decay_[index[k]] = overrides[k].weight_decay;
  }
}

void AdamW::step(double lr) {
  begin_step(lr);
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].second.grad().defined()) step_parameter(i, params_[i].second.grad());
  end_step();
}

void AdamW::step_parameter(size_t index, const at::Tensor& grad) {
  LR_CHECK(index < params_.size(), InvalidArgument, "AdamW: no parameter ", index);
  AdamConfig config = config_;
  if (!decay_[index]) config.weight_decay = 0;
  if (weight_decay_[index]) config.weight_decay = *weight_decay_[index];
  AdamState& state = states_[index];
  at::Tensor& param = params_[index].second;
  if (eight_bit_[index]) moments8_[index].restore(state.exp_avg, state.exp_avg_sq, param.scalar_type());
  adam_update(param, grad, state, config, lr_ * lr_scale_[index]);
  if (eight_bit_[index]) release_to_8bit(index);
}

void AdamW::release_to_8bit(size_t index) {
  AdamState& state = states_[index];
  moments8_[index].keep(state.exp_avg, state.exp_avg_sq);
  state.exp_avg.reset();
  state.exp_avg_sq.reset();
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad().reset();
  }
}

void AdamW::release_state(size_t index) {
  LR_CHECK(index < params_.size(), InvalidArgument, "AdamW: no parameter ", index);
  const int64_t step = states_[index].step;
  states_[index] = {};
  states_[index].step = step;
  moments8_[index] = {};
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (moments8_[i].defined()) {
      moments8_[i].append_state(out, params_[i].first);
      continue;
    }
    const AdamState& s = states_[i];
    const at::Tensor& p = params_[i].second;
    at::Tensor m = s.exp_avg.defined() ? s.exp_avg : at::zeros_like(p);
    at::Tensor v = s.exp_avg_sq.defined() ? s.exp_avg_sq : at::zeros_like(p);
    out.emplace_back(params_[i].first + ".exp_avg", m.detach().to(at::kCPU).contiguous());
    out.emplace_back(params_[i].first + ".exp_avg_sq", v.detach().to(at::kCPU).contiguous());
  }
  for (size_t i = 0; i < params_.size(); ++i)
    if (states_[i].step != steps_)
      out.emplace_back(params_[i].first + ".step", at::scalar_tensor(states_[i].step, at::kLong));
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t steps) {
  auto find = [&](const std::string& name) -> const at::Tensor& {
    for (const auto& [n, t] : tensors)
      if (n == name) return t;
    throw Corruption(str("optimizer state: missing tensor ", name));
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i].second;
    states_[i] = {};
    states_[i].step = steps;
    for (const auto& [n, t] : tensors)
      if (n == params_[i].first + ".step") states_[i].step = t.item<int64_t>();
    moments8_[i].read_state(tensors, params_[i].first, p.device());
    if (moments8_[i].defined()) continue;
    const at::Tensor& m = find(params_[i].first + ".exp_avg");
    const at::Tensor& v = find(params_[i].first + ".exp_avg_sq");
    LR_CHECK(m.sizes() == p.sizes() && v.sizes() == p.sizes(), Corruption, "optimizer state for ",
             params_[i].first, ": shape ", m.sizes(), " differs from the parameter's ", p.sizes());
    states_[i].exp_avg = m.to(p.device(), p.scalar_type()).clone();
    states_[i].exp_avg_sq = v.to(p.device(), p.scalar_type()).clone();
  }
  steps_ = steps;
}

OrderedJson memory_json(int64_t weights, int64_t grads, int64_t optimizer_states, int64_t projectors) {
  return OrderedJson{{"weights", weights},
                     {"grads", grads},
                     {"optimizer_states", optimizer_states},
                     {"projectors", projectors},
                     {"total", weights + grads + optimizer_states + projectors}};
}

OrderedJson AdamW::memory() const {
  auto bytes = [](const at::Tensor& t) {
    return t.defined() ? static_cast<int64_t>(t.nbytes()) : int64_t{0};
  };
  int64_t weights = 0, grads = 0, states = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    weights += bytes(params_[i].second);
    grads += bytes(params_[i].second.grad());
    states += bytes(states_[i].exp_avg) + bytes(states_[i].exp_avg_sq) + moments8_[i].bytes();
  }
  return memory_json(weights, grads, states, 0);
}

void magnitude_prune_(at::Tensor& t, double ratio) {
  at::NoGradGuard no_grad;
  if (ratio <= 0 || t.numel() == 0) return;
  if (ratio >= 1) {
    t.zero_();
    return;
  }
  const at::Tensor mag = t.abs().reshape({-1});
  const int64_t k = std::max<int64_t>(
      1, std::min<int64_t>(mag.numel(),
                           static_cast<int64_t>(std::ceil(ratio * static_cast<double>(mag.numel())))));
  const at::Tensor threshold = std::get<0>(mag.kthvalue(k));
  t.mul_(t.abs().gt(threshold).to(t.scalar_type()));
}

void Optimizer::prune_state(const std::string& name, double ratio, bool reset_step) {
  std::vector<std::pair<std::string, at::Tensor>> state = state_tensors();
  bool found = false;
  for (auto& [n, t] : state) {
    if (n == name + ".exp_avg" || n == name + ".exp_avg_sq") {
      t = t.clone();
      magnitude_prune_(t, ratio);
      found = true;
    }
    if (reset_step && n == name + ".step") t = at::zeros_like(t);
  }
  LR_CHECK(found, NotFound, "optimizer: no Adam moments for parameter ", name, " to reset");
  load_state(state, steps());
}

void AdamW::prune_state(const std::string& name, double ratio, bool reset_step) {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].first != name) continue;
    AdamState& s = states_[i];
    if (reset_step) s.step = 0;
    moments8_[i].restore(s.exp_avg, s.exp_avg_sq, params_[i].second.scalar_type());
    if (s.exp_avg.defined()) magnitude_prune_(s.exp_avg, ratio);
    if (s.exp_avg_sq.defined()) magnitude_prune_(s.exp_avg_sq, ratio);
    if (moments8_[i].defined()) release_to_8bit(i);
    return;
  }
  throw NotFound(str("optimizer: no parameter ", name, " to reset"));
}

}  // namespace lowrank::optim
