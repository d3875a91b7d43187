#include "lowrank/kernel_methods/hierarchical_poly.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/methods.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "hierarchical_poly";

void check_inputs(const at::Tensor& x, const at::Tensor& y) {
  LR_CHECK(x.dim() == 2 && x.size(0) >= 1 && x.size(1) >= 1, InvalidArgument, kName,
           ": x must be [n, d], got ", x.sizes());
  LR_CHECK(y.defined() && y.dim() == 1 && y.size(0) == x.size(0), InvalidArgument, kName,
           ": targets must be [", x.size(0), "], got ", y.defined() ? y.sizes() : at::IntArrayRef{});
}

void check_options(const HierarchicalPolyOptions& o) {
  LR_CHECK(o.width >= 1, InvalidArgument, kName, ": option \"width\" must be >= 1, got ", o.width);
  LR_CHECK(std::isfinite(o.init_scale) && o.init_scale > 0, InvalidArgument, kName,
           ": option \"init_scale\" must be > 0, got ", o.init_scale);
  LR_CHECK(std::isfinite(o.bias_range) && o.bias_range >= 0, InvalidArgument, kName,
           ": option \"bias_range\" must be >= 0, got ", o.bias_range);
  LR_CHECK(std::isfinite(o.ridge) && o.ridge > 0, InvalidArgument, kName,
           ": option \"ridge\" must be > 0, got ", o.ridge);
}

class HierarchicalPolyEstimator final : public Estimator {
 public:
  HierarchicalPolyEstimator(const Json& options, uint64_t seed) : Estimator(options, seed) {
    options_.width = json_get_or<int64_t>(options, "width", 256, kName);
    options_.init_scale = json_get_or<double>(options, "init_scale", 1e-3, kName);
    options_.bias_range = json_get_or<double>(options, "bias_range", 3.0, kName);
    options_.ridge = json_get_or<double>(options, "ridge", 1e-4, kName);
    check_options(options_);
  }
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    at::Generator generator = at::detail::createCPUGenerator(seed());
    network_ = hierarchical_poly_fit(data.x, data.y, options_, generator);
    report_ = {{"width", options_.width}};
  }
  at::Tensor predict_impl(const at::Tensor& x) const override {
    return hierarchical_poly_predict(network_, x);
  }
  std::vector<NamedTensor> state() const override {
    return {{"w", network_.w},
            {"b", network_.b},
            {"a", network_.a},
            {"c", at::tensor({network_.c}, at::kDouble)}};
  }
  void restore(const SafetensorsFile& file) override {
    network_.w = expect_state(file, "w");
    network_.b = expect_state(file, "b");
    network_.a = expect_state(file, "a");
    const at::Tensor c = expect_state(file, "c");
    const int64_t m = network_.w.dim() == 2 ? network_.w.size(0) : -1;
    LR_CHECK(m >= 1 && network_.w.size(1) == input_dim() * input_dim() && network_.b.dim() == 1 &&
                 network_.b.size(0) == m && network_.a.dim() == 1 && network_.a.size(0) == m &&
                 c.numel() == 1,
             Corruption, file.path().string(), ": w ", network_.w.sizes(), ", b ", network_.b.sizes(), ", a ",
             network_.a.sizes(), " and c ", c.sizes(), " do not fit together");
    network_.c = c.item<double>();
  }

 private:
  HierarchicalPolyOptions options_;
  HierarchicalPolyNetwork network_;
};

}  // namespace

at::Tensor random_traceless_quadratic(int64_t d, at::Generator& generator) {
  LR_CHECK(d >= 2, InvalidArgument, kName, ": a traceless quadratic needs d >= 2, got ", d);
  const at::Tensor g = at::empty({d, d}, at::kDouble).normal_(0, 1, generator);
  at::Tensor a = (g + g.t()) / 2;
  a = a - a.trace() / static_cast<double>(d) * at::eye(d, at::kDouble);
  return a / at::linalg_matrix_norm(a, "fro");
}

at::Tensor quadratic_feature(const at::Tensor& a, const at::Tensor& x) {
  LR_CHECK(x.dim() == 2 && a.dim() == 2 && a.size(0) == x.size(1) && a.size(1) == x.size(1), InvalidArgument,
           kName, ": A must be [d, d] for x [n, d], got A ", a.sizes(), " and x ", x.sizes());
  const at::Tensor xd = x.to(at::kDouble);
  return (at::matmul(xd, a.to(at::kDouble)) * xd).sum(1) / std::sqrt(2.0);
}

at::Tensor degree2_features(const at::Tensor& x) {
  LR_CHECK(x.dim() == 2, InvalidArgument, kName, ": x must be [n, d], got ", x.sizes());
  const at::Tensor xd = x.to(at::kDouble);
  const int64_t n = xd.size(0), d = xd.size(1);
  const at::Tensor outer = xd.unsqueeze(2) * xd.unsqueeze(1) - at::eye(d, xd.options());
  return outer.reshape({n, d * d});
}

at::Tensor hierarchical_poly_stage1(const at::Tensor& x, const at::Tensor& y, const at::Tensor& signs,
                                    double init_scale) {
  check_inputs(x, y);
  LR_CHECK(signs.dim() == 1 && signs.size(0) >= 1, InvalidArgument, kName, ": signs must be [m], got ",
           signs.sizes());
  const at::Tensor phi = degree2_features(x);
  const at::Tensor a0 = init_scale * signs.to(at::kDouble);
  // f⁰(x) = Σ_j a_j σ(0 + b⁰_j) with b⁰ = 1: the same for every x.
  const double f0 = a0.sum().item<double>();
  // ∂L/∂w_j = Ê[(f⁰ − y) a_j σ'(b⁰_j) φ(x)], σ'(1) = 1.
  const at::Tensor correlation = at::mv(phi.t(), y.to(at::kDouble) - f0) / static_cast<double>(x.size(0));
  const double norm = correlation.norm().item<double>();
  LR_CHECK(norm > 0, InvalidArgument, kName, ": the targets are uncorrelated with every degree-2 feature");
  // w_j = η a_j Ê[(y − f⁰)φ] with η = 1/(|a_j|‖Ê[(y − f⁰)φ]‖): unit rows of sign a_j.
  return at::outer(signs.to(at::kDouble).sign(), correlation / norm);
}

HierarchicalPolyNetwork hierarchical_poly_fit(const at::Tensor& x, const at::Tensor& y,
                                              const HierarchicalPolyOptions& options,
                                              at::Generator& generator) {
  check_inputs(x, y);
  check_options(options);
  const int64_t n = x.size(0), m = options.width;
  const at::Tensor signs = at::empty({m}, at::kDouble).bernoulli_(0.5, generator) * 2 - 1;
  HierarchicalPolyNetwork network;
  network.w = hierarchical_poly_stage1(x, y, signs, options.init_scale);
  network.b = at::empty({m}, at::kDouble).uniform_(-options.bias_range, options.bias_range, generator);
  network.a = at::zeros({m}, at::kDouble);
  // Stage 2: ridge on the centred hidden features, the intercept unpenalised.
  const at::Tensor hidden = at::relu(at::matmul(degree2_features(x), network.w.t()) + network.b);
  const at::Tensor yd = y.to(at::kDouble);
  const at::Tensor hidden_mean = hidden.mean(0), y_mean = yd.mean();
  const at::Tensor centred = hidden - hidden_mean;
  const at::Tensor gram =
      at::matmul(centred.t(), centred) + options.ridge * static_cast<double>(n) * at::eye(m, at::kDouble);
  network.a = at::linalg_solve(gram, at::mv(centred.t(), yd - y_mean));
  network.c = (y_mean - at::dot(hidden_mean, network.a)).item<double>();
  return network;
}

at::Tensor hierarchical_poly_predict(const HierarchicalPolyNetwork& network, const at::Tensor& x) {
  LR_CHECK(x.dim() == 2 && x.size(1) * x.size(1) == network.w.size(1), InvalidArgument, kName,
           ": x must be [n, d] with d² = ", network.w.size(1), ", got ", x.sizes());
  const at::Tensor hidden = at::relu(at::matmul(degree2_features(x), network.w.t()) + network.b);
  return at::mv(hidden, network.a) + network.c;
}

void register_hierarchical_poly(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "Three-layer network for h = g∘p trained layerwise: one large gradient step on the middle layer over "
       "degree-2 features vec(xxᵀ − I) learns p, then ridge on the outer layer fits g",
       "Wang, Nichani & Lee, ICLR 2024, arXiv:2311.13774",
       {{"width", "hidden units m (default 256)"},
        {"init_scale", "|a_j| during the stage-1 step, > 0 (default 1e-3)"},
        {"bias_range", "stage-2 biases drawn from U[−range, range], >= 0 (default 3)"},
        {"ridge", "stage-2 ridge λ, scaled by n, > 0 (default 1e-4)"}}},
      {[](const Json& options, uint64_t seed) {
        return std::make_unique<HierarchicalPolyEstimator>(options, seed);
      }});
}

}  // namespace lowrank::kernel_methods
