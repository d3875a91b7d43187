#include "lowrank/kernel_methods/snnk.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/krr.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/linalg/random_features.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "snnk";

void check_activation(std::string_view activation, std::string_view what) {
  for (const std::string& known : urf_activations())
    if (activation == known) return;
  throw InvalidArgument(
      str(what, ": activation \"", activation, "\" has no URF here; known: cos, sin, gaussian"));
}

void check_variance_m(double variance_m, std::string_view what) {
  // The Gaussian integral behind the identity converges only for 1 + 4M > 0.
  LR_CHECK(std::isfinite(variance_m) && variance_m > -0.25, InvalidArgument, what,
           ": option \"variance_m\" must be > -0.25, got ", variance_m);
}

// [x, 1]: the layer's bias as one more input coordinate.
at::Tensor with_unit_column(const at::Tensor& x) {
  LR_CHECK(x.dim() == 2, InvalidArgument, "snnk: inputs must be [n, d], got ", x.sizes());
  return at::cat({x, at::ones({x.size(0), 1}, x.options())}, 1);
}

}  // namespace

const std::vector<std::string>& urf_activations() {
  static const std::vector<std::string> names = {"cos", "sin", "gaussian"};
  return names;
}

at::Tensor urf_activation(std::string_view activation, const at::Tensor& z) {
  check_activation(activation, "urf_activation");
  if (activation == "cos") return at::cos(z);
  if (activation == "sin") return at::sin(z);
  return at::exp(-z * z / 2);
}

UrfDraw draw_urf(std::string_view activation, int64_t features, int64_t dim, double variance_m,
                 at::Generator& gen) {
  check_activation(activation, "draw_urf");
  check_variance_m(variance_m, "draw_urf");
  LR_CHECK(features >= 1 && dim >= 1, InvalidArgument, "draw_urf: features (", features, ") and dim (", dim,
           ") must be >= 1");
  UrfDraw out{std::string(activation), at::empty({features, dim}, at::kDouble).normal_(0, 1, gen),
              at::Tensor(), variance_m};
  if (activation == "gaussian") {
    out.frequencies = at::empty({features}, at::kDouble).normal_(0, 1, gen);
  } else {  // ξ = ±1 with probability ½ each
    out.frequencies = at::empty({features}, at::kDouble).bernoulli_(0.5, gen) * 2 - 1;
  }
  return out;
}

at::Tensor urf_input_features(const UrfDraw& draw, const at::Tensor& x) {
  check_variance_m(draw.variance_m, "urf_input_features");
  const double scale = 1 + 4 * draw.variance_m;
  const at::Tensor xd = x.to(at::kDouble);
  // exp(s a gᵀx − a²‖x‖²/2)/√m: the M = 0 map on the rescaled projection s·G.
  const at::Tensor base =
      linalg::universal_features(xd, draw.projection * std::sqrt(scale), draw.frequencies);
  // (1 + 4M)^{d/4} e^{−M‖g_j‖²}, one real factor per feature.
  const double d = static_cast<double>(draw.projection.size(1));
  const at::Tensor factor =
      at::exp(-draw.variance_m * draw.projection.pow(2).sum(1) + (d / 4) * std::log(scale));
  return base * factor.to(at::kComplexDouble);
}

at::Tensor urf_weight_features(const UrfDraw& draw, const at::Tensor& w, const at::Tensor& b) {
  LR_CHECK(b.dim() == 1 && w.dim() == 2 && b.size(0) == w.size(0), InvalidArgument,
           "urf_weight_features: the bias must be [k] for weights [k, d], got ", b.sizes(), " and ",
           w.sizes());
  const at::Tensor xi = draw.frequencies.to(at::kComplexDouble);
  const c10::Scalar i_unit(c10::complex<double>(0, 1));
  at::Tensor weight = at::ones_like(xi);  // (τ/p)(ξ)
  if (draw.activation == "sin") weight = -xi * i_unit;
  // e^{iξ_j b_k} [k, m]
  const at::Tensor phase = at::exp(at::outer(b.to(at::kDouble).to(at::kComplexDouble), xi) * i_unit);
  return urf_input_features(draw, w) * phase * weight;
}

at::Tensor urf_estimate(const UrfDraw& draw, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  // Re Σ_j φ_j ψ_j: a plain (not conjugated) product, as in the identity.
  return at::real(at::matmul(urf_input_features(draw, x), urf_weight_features(draw, w, b).t()));
}

at::Tensor snnk_relu_features(const at::Tensor& x, const at::Tensor& g) {
  return linalg::relu_features(with_unit_column(x.to(at::kDouble)), g);
}

at::Tensor snnk_relu_weights(const at::Tensor& w, const at::Tensor& b, const at::Tensor& g) {
  LR_CHECK(b.dim() == 1 && w.dim() == 2 && b.size(0) == w.size(0), InvalidArgument,
           "snnk_relu_weights: the bias must be [k] for weights [k, d], got ", b.sizes(), " and ", w.sizes());
  return linalg::relu_features(at::cat({w.to(at::kDouble), b.to(at::kDouble).unsqueeze(1)}, 1), g);
}

namespace {

struct SnnkOptions {
  int64_t features = 256;
  std::string activation = "relu";
  double lambda = 1e-3;
  double variance_m = 0;

  explicit SnnkOptions(const Json& o) {
    features = json_get_or<int64_t>(o, "features", features, kName);
    LR_CHECK(features >= 1, InvalidArgument, kName, ": option \"features\" must be >= 1, got ", features);
    activation = json_get_or<std::string>(o, "activation", activation, kName);
    lambda = json_get_or<double>(o, "lambda", lambda, kName);
    variance_m = json_get_or<double>(o, "variance_m", variance_m, kName);
    LR_CHECK(activation == "relu" || activation == "cos" || activation == "sin" || activation == "gaussian",
             InvalidArgument, kName,
             ": option \"activation\" must be \"relu\", \"cos\", \"sin\" or \"gaussian\", got \"", activation,
             "\"");
    LR_CHECK(std::isfinite(lambda) && lambda >= 0, InvalidArgument, kName,
             ": option \"lambda\" must be >= 0, got ", lambda);
    check_variance_m(variance_m, kName);
  }
};

class Snnk final : public Estimator {
 public:
  Snnk(const Json& options, uint64_t seed) : Estimator(options, seed), options_(options) {}
  std::string_view method() const override { return kName; }

 protected:
  // ŷ = Φ(x)β + c.
  at::Tensor predict_impl(const at::Tensor& x) const override {
    const at::Tensor out = at::matmul(features(x), coefficients_);
    return coefficients_.dim() == 1 ? out + intercept_[0] : out + intercept_;
  }

  void fit_impl(const Dataset& data) override {
    LR_CHECK(data.y.defined(), InvalidArgument, kName, ": ", data.source, " has no targets y to regress on");
    draw_map(data.x.size(1));
    const at::Tensor phi = features(data.x);
    const at::Tensor mean_row = phi.mean(0);
    const at::Tensor y_mean = data.y.mean(0);
    const RidgePath path = ridge_path(phi - mean_row, data.y - y_mean);
    coefficients_ = ridge_coefficients(path, options_.lambda);
    intercept_ = (y_mean - at::matmul(mean_row, coefficients_)).reshape({-1});
    report_ = {{"lambda", options_.lambda},
               {"features", options_.features},
               {"activation", options_.activation},
               {"train_mse", (predict_impl(data.x) - data.y).pow(2).mean().item<double>()}};
  }

  std::vector<NamedTensor> state() const override {
    std::vector<NamedTensor> out = {
        {"projection", projection_}, {"coefficients", coefficients_}, {"intercept", intercept_}};
    if (frequencies_.defined()) out.push_back({"frequencies", frequencies_});
    return out;
  }
  void restore(const SafetensorsFile& file) override {
    projection_ = expect_state(file, "projection");
    coefficients_ = expect_state(file, "coefficients");
    intercept_ = expect_state(file, "intercept");
    const int64_t width = input_dim() + (options_.activation == "relu" ? 1 : 0);
    LR_CHECK(
        projection_.dim() == 2 && projection_.size(0) == options_.features && projection_.size(1) == width,
        Corruption, file.path().string(), ": projection has shape ", projection_.sizes());
    if (options_.activation != "relu") frequencies_ = expect_state(file, "frequencies");
  }

 private:
  // The fixed random part of the layer: G (and ξ for URF), from the estimator's seed.
  void draw_map(int64_t d) {
    at::Generator gen = at::detail::createCPUGenerator(seed());
    frequencies_ = at::Tensor();
    if (options_.activation == "relu") {
      projection_ = at::empty({options_.features, d + 1}, at::kDouble).normal_(0, 1, gen);
      return;
    }
    const UrfDraw draw = draw_urf(options_.activation, options_.features, d, options_.variance_m, gen);
    projection_ = draw.projection;
    frequencies_ = draw.frequencies;
  }

  // The real features the readout sees, as the header defines them.
  at::Tensor features(const at::Tensor& x) const {
    if (options_.activation == "relu") return snnk_relu_features(x, projection_);
    const double d = static_cast<double>(x.size(1));
    const UrfDraw draw{options_.activation, projection_, frequencies_, options_.variance_m};
    const at::Tensor phi = urf_input_features(draw, x / std::pow(d, 0.25));
    return at::cat({at::real(phi), at::imag(phi)}, 1);
  }

  SnnkOptions options_;
  at::Tensor projection_, frequencies_, coefficients_, intercept_;
};

}  // namespace

void register_snnk(Registry<EstimatorMethod>& registry) {
  registry.add(
      {kName,
       "Scalable neural network kernel: the bundled SNNK network, readout solved by ridge (no backprop)",
       "Sehanobish, Choromanski et al., 2024, ICLR, arXiv:2310.13225",
       {{"features", "number of random features m (default 256)"},
        {"activation",
         "\"relu\" (SNNK-ReLU, Φ = ReLU(G[x; 1])/√m, default) or a URF activation: \"cos\", \"sin\", "
         "\"gaussian\" (features [Re φ, Im φ] of x/d^{1/4})"},
        {"lambda", "ridge λ >= 0 on the readout (default 1e-3); the intercept is not penalised"},
        {"variance_m", "URF variance parameter M > -0.25 (default 0: the plain identity)"}}},
      {[](const Json& options, uint64_t seed) { return std::make_unique<Snnk>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
