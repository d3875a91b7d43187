#include "lowrank/kernel_methods/rf_ridge.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/krr.h"
#include "lowrank/kernel_methods/methods.h"
#include "lowrank/linalg/random_features.h"

namespace lowrank::kernel_methods {
namespace {

constexpr const char* kName = "rf_ridge";

struct RfRidgeOptions {
  int64_t features = 256;
  std::string activation = "relu";
  double bandwidth = 1.0;
  double lambda = 1e-3;

  explicit RfRidgeOptions(const Json& o) {
    features = json_get_or<int64_t>(o, "features", features, kName);
    activation = json_get_or<std::string>(o, "activation", activation, kName);
    bandwidth = json_get_or<double>(o, "bandwidth", bandwidth, kName);
    lambda = json_get_or<double>(o, "lambda", lambda, kName);
    LR_CHECK(features >= 1, InvalidArgument, kName, ": option \"features\" must be >= 1, got ", features);
    LR_CHECK(activation == "relu" || activation == "fourier", InvalidArgument, kName,
             ": option \"activation\" must be \"relu\" or \"fourier\", got \"", activation, "\"");
    LR_CHECK(std::isfinite(bandwidth) && bandwidth > 0, InvalidArgument, kName,
             ": option \"bandwidth\" must be > 0, got ", bandwidth);
    LR_CHECK(std::isfinite(lambda) && lambda >= 0, InvalidArgument, kName,
             ": option \"lambda\" must be >= 0, got ", lambda);
  }
};

class RfRidge final : public Estimator {
 public:
  RfRidge(const Json& options, uint64_t seed) : Estimator(options, seed), options_(options) {}
  std::string_view method() const override { return kName; }

 protected:
  void fit_impl(const Dataset& data) override {
    LR_CHECK(data.y.defined(), InvalidArgument, kName, ": ", data.source, " has no targets y");
    const int64_t d = data.x.size(1);
    at::Generator gen = at::detail::createCPUGenerator(seed());
    projection_ = at::empty({options_.features, d}, at::kDouble).normal_(0, 1, gen);
    if (options_.activation == "fourier") {
      projection_ /= options_.bandwidth;
      phases_ = at::empty({options_.features}, at::kDouble).uniform_(0, 2 * std::numbers::pi, gen);
    } else {
      phases_ = at::Tensor();
    }
    const RidgePath path = ridge_path(features(data.x), data.y);
    coefficients_ = ridge_coefficients(path, options_.lambda);
    report_ = {{"lambda", options_.lambda},
               {"features", options_.features},
               {"train_mse", (ridge_fitted(path, options_.lambda) - data.y).pow(2).mean().item<double>()}};
  }

  at::Tensor predict_impl(const at::Tensor& x) const override {
    return at::matmul(features(x), coefficients_);
  }

  std::vector<NamedTensor> state() const override {
    std::vector<NamedTensor> out = {{"projection", projection_}, {"coefficients", coefficients_}};
    if (phases_.defined()) out.push_back({"phases", phases_});
    return out;
  }
  void restore(const SafetensorsFile& file) override {
    projection_ = expect_state(file, "projection");
    coefficients_ = expect_state(file, "coefficients");
    LR_CHECK(projection_.dim() == 2 && projection_.size(0) == options_.features &&
                 projection_.size(1) == input_dim(),
             Corruption, file.path().string(), ": projection has shape ", projection_.sizes());
    if (options_.activation == "fourier") phases_ = expect_state(file, "phases");
  }

 private:
  // Φ [n, k] as the header defines it.
  at::Tensor features(const at::Tensor& x) const {
    if (options_.activation == "fourier") return linalg::fourier_features(x, projection_, phases_);
    return linalg::relu_features(x / std::sqrt(static_cast<double>(x.size(1))), projection_);
  }

  RfRidgeOptions options_;
  at::Tensor projection_, phases_, coefficients_;
};

}  // namespace

EigenlearningRisk eigenlearning_risk(const at::Tensor& eigenvalues, const at::Tensor& coefficients, int64_t n,
                                     double ridge, double noise_variance) {
  LR_CHECK(eigenvalues.dim() == 1 && coefficients.dim() == 1 && eigenvalues.size(0) == coefficients.size(0),
           InvalidArgument, "eigenlearning: eigenvalues ", eigenvalues.sizes(), " and coefficients ",
           coefficients.sizes(), " must be 1-D of the same length");
  LR_CHECK(eigenvalues.gt(0).all().item<bool>(), InvalidArgument, "eigenlearning: eigenvalues must be > 0");
  LR_CHECK(n >= 1, InvalidArgument, "eigenlearning: n must be >= 1, got ", n);
  LR_CHECK(ridge >= 0 && noise_variance >= 0, InvalidArgument, "eigenlearning: ridge (", ridge,
           ") and noise variance (", noise_variance, ") must be >= 0");
  const at::Tensor lam = eigenvalues.to(at::kDouble), v = coefficients.to(at::kDouble);
  const double nn = static_cast<double>(n);
  auto excess = [&](double kappa) { return (lam / (lam + kappa)).sum().item<double>() + ridge / kappa - nn; };
  // The left side falls from +∞ (or from M − n at δ = 0) to 0 as κ grows; it is below n once
  // κ > (Σλ + δ)/n.
  double hi = 2 * (lam.sum().item<double>() + ridge) / nn;
  double lo = hi;
  for (int i = 0; i < 2000 && excess(lo) <= 0; ++i) lo /= 10;
  LR_CHECK(excess(lo) > 0, InvalidArgument, "eigenlearning: no effective ridge κ for n = ", n,
           " with ridge 0 and ", lam.size(0), " eigenmodes (ridgeless needs n < the number of modes)");
  for (int i = 0; i < 200; ++i) {  // bisection in log κ
    const double mid = std::sqrt(lo * hi);
    (excess(mid) > 0 ? lo : hi) = mid;
  }
  EigenlearningRisk out;
  out.kappa = std::sqrt(lo * hi);
  out.learnabilities = lam / (lam + out.kappa);
  out.e0 = nn / (nn - out.learnabilities.pow(2).sum().item<double>());
  out.test_mse =
      out.e0 * (((1 - out.learnabilities).pow(2) * v.pow(2)).sum().item<double>() + noise_variance);
  const double shrink = ridge / (nn * out.kappa);
  out.train_mse = shrink * shrink * out.test_mse;
  return out;
}

RidgePathErrors ridge_path_errors(const at::Tensor& train_features, const at::Tensor& y_train,
                                  const at::Tensor& test_features, const at::Tensor& y_test,
                                  const std::vector<double>& lambdas) {
  LR_CHECK(test_features.dim() == 2 && test_features.size(1) == train_features.size(1), InvalidArgument,
           "ridge path: test features ", test_features.sizes(), " do not match the training features ",
           train_features.sizes());
  const RidgePath path = ridge_path(train_features, y_train);
  RidgePathErrors out;
  for (double lambda : lambdas) {
    out.lambdas.push_back(lambda);
    out.train_mse.push_back((ridge_fitted(path, lambda) - y_train).pow(2).mean().item<double>());
    const at::Tensor beta = ridge_coefficients(path, lambda);
    out.test_mse.push_back((at::matmul(test_features, beta) - y_test).pow(2).mean().item<double>());
  }
  return out;
}

void register_rf_ridge(Registry<EstimatorMethod>& registry) {
  registry.add({kName,
                "Random-feature ridge regression, one SVD per (n, k) for a whole ridge path",
                "Simon, Karkada, Ghosh & Belkin, 2023, arXiv:2311.14646",
                {{"features", "number of random features k (default 256)"},
                 {"activation",
                  "\"relu\" (φ = ReLU(wᵀx/√d)/√k, default) or \"fourier\" (RBF random Fourier features)"},
                 {"bandwidth", "RBF bandwidth h of the fourier features (default 1)"},
                 {"lambda", "ridge λ >= 0 (default 1e-3; 0 is the minimum-norm interpolant)"}}},
               {[](const Json& options, uint64_t seed) { return std::make_unique<RfRidge>(options, seed); }});
}

}  // namespace lowrank::kernel_methods
