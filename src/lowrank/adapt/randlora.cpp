// RandLoRA in PEFT's format; the equations and the file layout are in randlora.h.
#include "lowrank/adapt/randlora.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/adapt/methods.h"
#include "lowrank/core/error.h"

namespace lowrank::adapt {
namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// torch.nn.init.kaiming_uniform_(empty(shape, dtype), a=√5, generator), operation for operation:
// fan_in = shape[1]·Π shape[2:], gain = √(2/(1 + a²)), bound = √3 · gain/√fan_in.
at::Tensor torch_kaiming_uniform(at::IntArrayRef shape, at::ScalarType dtype, at::Generator& gen) {
  int64_t fan_in = shape[1];
  for (size_t i = 2; i < shape.size(); ++i) fan_in *= shape[i];
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1 + a * a));
  const double bound = std::sqrt(3.0) * (gain / std::sqrt(static_cast<double>(fan_in)));
  return at::empty(shape, at::TensorOptions(dtype)).uniform_(-bound, bound, gen);
}

// model.py _init_randlora_A_randlora_B_sparse's ternary map of uniform draws u:
// −1 where u < 1/(2k), 1 where u > 1 − 1/(2k), 0 elsewhere.
at::Tensor ternary(const at::Tensor& u, double k) {
  at::Tensor t = at::zeros(u.sizes());
  t.masked_fill_(u < 1 / (2 * k), -1);
  t.masked_fill_(u > 1 - 1 / (2 * k), 1);
  return t;
}

struct Settings {
  double alpha = 640;  // randlora_alpha, PEFT's default
  double dropout = 0;  // randlora_dropout
  uint64_t seed = 0;   // projection_prng_key
  bool sparse = false, very_sparse = false;
  bool save_projection = true;
};

Settings settings_of(const AdapterConfig& c) {
  const char* what = "adapter_config.json (RandLoRA)";
  Settings s;
  s.alpha = json_get_or<double>(c.extra, "randlora_alpha", s.alpha, what);
  LR_CHECK(s.alpha > 0 && std::isfinite(s.alpha), InvalidArgument,
           "randlora: randlora_alpha must be positive, got ", s.alpha);
  s.dropout = json_get_or<double>(c.extra, "randlora_dropout", s.dropout, what);
  LR_CHECK(s.dropout >= 0 && s.dropout < 1, InvalidArgument,
           "randlora: randlora_dropout must be in [0, 1), got ", s.dropout);
  const int64_t seed = json_get_or<int64_t>(c.extra, "projection_prng_key", 0, what);
  LR_CHECK(seed >= 0, InvalidArgument, "randlora: projection_prng_key must be >= 0, got ", seed);
  s.seed = static_cast<uint64_t>(seed);
  s.sparse = json_get_or<bool>(c.extra, "sparse", false, what);
  s.very_sparse = json_get_or<bool>(c.extra, "very_sparse", false, what);
  s.save_projection = json_get_or<bool>(c.extra, "save_projection", true, what);
  return s;
}

// Every slot of an adapter uses the same bases: they are generated once per configuration and
// handed to each slot from a weak cache, so memory holds one copy while some adapter uses it.
std::pair<at::Tensor, at::Tensor> shared_bases(const LayerSpec& spec, const Settings& s, int64_t largest_out,
                                               int64_t largest_in) {
  using Weak = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  using Key = std::tuple<int64_t, int64_t, int64_t, uint64_t, bool, bool, int, std::string>;
  static std::mutex mutex;
  static std::map<Key, std::pair<Weak, Weak>> cache;
  const Key key{spec.r,
                largest_out,
                largest_in,
                s.seed,
                s.sparse,
                s.very_sparse,
                static_cast<int>(spec.dtype),
                spec.device.str()};
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) {
    auto a = it->second.first.lock();
    auto b = it->second.second.lock();
    if (a && b) return {at::Tensor(std::move(a)), at::Tensor(std::move(b))};
  }
  auto [a, b] = randlora_bases(spec.r, largest_out, largest_in, s.seed, s.sparse, s.very_sparse);
  a = a.to(spec.device, spec.dtype).contiguous();
  b = b.to(spec.device, spec.dtype).contiguous();
  cache.insert_or_assign(key, std::make_pair(Weak(a.getIntrusivePtr()), Weak(b.getIntrusivePtr())));
  return {a, b};
}

std::shared_ptr<TrainableAdapter> create_randlora(const LayerSpec& spec, const nn::BaseOperator& base) {
  const int64_t in = base.in_features(), out = base.out_features();
  const int64_t m = std::min(in, out);
  LR_CHECK(spec.r <= m, InvalidArgument, "module ", spec.module, ": rank ", spec.r,
           " exceeds min(in, out) = ", m);
  const Settings s = settings_of(*spec.config);
  auto [a, b] = shared_bases(spec, s, std::max(spec.largest_out, out), std::max(spec.largest_in, in));
  const int64_t n = ceil_div(m, spec.r);
  const auto options = at::TensorOptions(spec.dtype).device(spec.device);
  // layer.py reset_randlora_parameters: λ = 0, γ = 1 / max(γ.shape).
  at::Tensor lambda = at::zeros({spec.r, n}, options);
  at::Tensor gamma = at::full({n, m}, 1.0 / static_cast<double>(std::max(n, m)), options);
  return std::make_shared<RandloraAdapter>(a, b, lambda, gamma, in, out,
                                           s.alpha / static_cast<double>(spec.r), s.dropout);
}

std::shared_ptr<TrainableAdapter> load_randlora(const LayerSpec& spec, const nn::BaseOperator& base,
                                                const TensorMap& tensors, std::string_view what) {
  const int64_t in = base.in_features(), out = base.out_features();
  const int64_t m = std::min(in, out), big = std::max(in, out), n = ceil_div(m, spec.r);
  const Settings s = settings_of(*spec.config);
  // The file's shared bases; PEFT >= 0.21 also stores a copy under every module.
  auto basis = [&](const std::string& name) -> at::Tensor {
    if (auto it = tensors.find("base_model." + name); it != tensors.end()) return it->second;
    if (auto it = tensors.find(name); it != tensors.end())
      return it->second.to(spec.device, spec.dtype).contiguous();
    throw Unsupported(
        str(what, ": module ", spec.module, " has no random basis ", name, " (base_model.", name, ")",
            s.save_projection ? ""
                              : "; the adapter was saved with save_projection = false, and "
                                "regenerating the bases from projection_prng_key with PyTorch's "
                                "RNG is not supported"));
  };
  const at::Tensor a = basis("randlora_A");
  const at::Tensor b = basis("randlora_B");
  LR_CHECK(a.dim() == 3 && a.size(0) == spec.r && (a.size(1) == 1 || a.size(1) >= n) && a.size(2) >= m,
           InvalidArgument, what, ": randlora_A has shape ", a.sizes(), "; module ", spec.module, " needs [",
           spec.r, ", 1, >= ", m, "]");
  LR_CHECK(b.dim() == 3 && b.size(0) >= big && b.size(1) >= n && b.size(2) == spec.r, InvalidArgument, what,
           ": randlora_B has shape ", b.sizes(), "; module ", spec.module, " needs [>= ", big, ", >= ", n,
           ", ", spec.r, "]");
  at::Tensor lambda = expect_tensor(tensors, "randlora_lambda", {spec.r, n}, spec, what);
  at::Tensor gamma = expect_tensor(tensors, "randlora_gamma", {n, m}, spec, what);
  return std::make_shared<RandloraAdapter>(a, b, lambda, gamma, in, out,
                                           s.alpha / static_cast<double>(spec.r), s.dropout);
}

// The bases are always written, so the file never needs PEFT's regeneration from the seed.
AdapterConfig randlora_export_config(const AdapterConfig& c) {
  AdapterConfig out = c;
  out.extra["save_projection"] = true;
  out.write_lora_keys = false;
  return out;
}

}  // namespace

std::pair<at::Tensor, at::Tensor> randlora_bases(int64_t r, int64_t largest_out, int64_t largest_in,
                                                 uint64_t seed, bool sparse, bool very_sparse) {
  const int64_t max_dim = std::max(largest_out, largest_in), min_dim = std::min(largest_out, largest_in);
  const int64_t n = ceil_div(min_dim, r);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor a, b;
  if (sparse || very_sparse) {
    const double k = very_sparse ? std::sqrt(static_cast<double>(min_dim)) : 3.0;
    const at::Tensor ua = at::rand({r, 1, min_dim}, gen);
    const at::Tensor ub = at::rand({max_dim, n, r}, gen);
    a = ternary(ua, k);
    b = ternary(ub, k);
  } else {
    a = torch_kaiming_uniform({r, 1, min_dim}, at::kBFloat16, gen);
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < n; ++i)
      parts.push_back(torch_kaiming_uniform({max_dim, 1, r}, at::kBFloat16, gen));
    b = at::cat(parts, 1);
  }
  // "Std normalization is empirically found to be the best" (model.py), in the draws' dtype.
  a = a / a.std();
  b = b / b.std();
  return {a.to(at::kFloat), b.to(at::kFloat)};
}

RandloraAdapter::RandloraAdapter(at::Tensor a, at::Tensor b, at::Tensor lambda, at::Tensor gamma, int64_t in,
                                 int64_t out, double scaling, double dropout)
    : a_(std::move(a)),
      b_(std::move(b)),
      lambda_(std::move(lambda)),
      gamma_(std::move(gamma)),
      in_(in),
      out_(out),
      n_(lambda_.size(1)),
      scaling_(scaling),
      dropout_p_(dropout) {
  const int64_t m = std::min(in_, out_), r = lambda_.size(0);
  LR_CHECK(lambda_.dim() == 2 && gamma_.dim() == 2 && gamma_.size(0) == n_ && gamma_.size(1) == m &&
               a_.dim() == 3 && a_.size(0) == r && a_.size(2) >= m && b_.dim() == 3 &&
               b_.size(0) >= std::max(in_, out_) && b_.size(1) >= n_ && b_.size(2) == r,
           InvalidArgument, "randlora: A ", a_.sizes(), ", B ", b_.sizes(), ", lambda ", lambda_.sizes(),
           " and gamma ", gamma_.sizes(), " do not fit a ", out_, "x", in_, " layer");
}

at::Tensor RandloraAdapter::scaled_a() const {
  const int64_t m = std::min(in_, out_);
  const at::Tensor a = a_.slice(1, 0, n_).slice(2, 0, m);  // [r, 1 or n, m]
  return (lambda_.unsqueeze(2) * a * gamma_.unsqueeze(0)).flatten(0, 1);
}

at::Tensor RandloraAdapter::flat_b() const {
  return b_.slice(0, 0, std::max(in_, out_)).slice(1, 0, n_).flatten(1);
}

at::Tensor RandloraAdapter::compute_delta(const at::Tensor& x, const at::Tensor&,
                                          const nn::BaseOperator&) const {
  // randlora_dropout, unless the framework's lora_dropout already dropped x out.
  const at::Tensor input =
      training() && dropout_p_ > 0 && !dropout_active() ? at::dropout(x, dropout_p_, true) : x;
  if (in_ <= out_) return at::linear(at::linear(input, scaled_a()), flat_b()) * scaling_;
  return at::linear(at::linear(input, flat_b().t()), scaled_a().t()) * scaling_;
}

at::Tensor RandloraAdapter::delta_weight(const nn::BaseOperator&) const {
  const at::Tensor w = at::matmul(flat_b(), scaled_a()) * scaling_;  // [M, m]
  return in_ <= out_ ? w : w.t();
}

void register_randlora(Registry<AdapterMethod>& registry) {
  registry.add({"randlora",
                "Full-rank update from shared frozen random bases with trained diagonal scalings (PEFT)",
                "Albert et al., 2025, arXiv:2502.00987",
                {{"r",
                  "rank of each random basis (8; PEFT's default 32); smaller r means more bases and more "
                  "trained parameters, about min(in, out) * (1 + min(in, out) / r) per slot"},
                 {"randlora_alpha", "alpha (640); scaling randlora_alpha / r"},
                 {"randlora_dropout", "dropout on the adapter input (0)"},
                 {"projection_prng_key", "seed of the random bases (0)"},
                 {"sparse", "ternary bases with P(+-1) = 1/6 each (false)"},
                 {"very_sparse", "ternary bases with P(+-1) = 1/(2 sqrt(min_dim)) each (false)"}}},
               {"RANDLORA", create_randlora, load_randlora, randlora_export_config});
}

}  // namespace lowrank::adapt
