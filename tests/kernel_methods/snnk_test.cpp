// snnk: the URF estimate of f(wᵀx + b) against the exact f by Monte Carlo (4 standard errors), the
// SNNK-ReLU Gram and layer estimate against the closed-form degree-1 arc-cosine kernel, the
// closed-form bundled readout against gradient descent run to convergence, the estimator round trip
// and its bad options.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <numbers>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/snnk.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

double exact(const std::string& f, double z) {
  if (f == "cos") return std::cos(z);
  if (f == "sin") return std::sin(z);
  return std::exp(-z * z / 2);
}

TEST(SnnkTest, UrfIsUnbiasedForEachActivationWithinFourStandardErrors) {
  constexpr int64_t m = 20000;
  // ‖x‖ = ‖w‖ = 0.8: on the sphere's scale, where the estimator's variance is moderate.
  const at::Tensor x = normal({2, 3}, 1), w = normal({2, 3}, 2);
  const at::Tensor xs = 0.8 * x / x.norm(2, 1, true), ws = 0.8 * w / w.norm(2, 1, true);
  const at::Tensor b = at::tensor({0.4, -0.7}, at::kDouble);
  uint64_t seed = 10;
  for (const std::string& f : urf_activations()) {
    for (double variance_m : {0.0, 0.5}) {
      at::Generator gen = at::detail::createCPUGenerator(seed++);
      const UrfDraw draw = draw_urf(f, m, 3, variance_m, gen);
      const at::Tensor phi = urf_input_features(draw, xs), psi = urf_weight_features(draw, ws, b);
      for (int64_t i = 0; i < 2; ++i) {
        const double z = (xs[i] * ws[i]).sum().item<double>() + b[i].item<double>();
        // m·Re(φ_jψ_j) are m i.i.d. draws whose mean is the estimate.
        const at::Tensor samples = at::real(phi[i] * psi[i]) * static_cast<double>(m);
        const double mean = samples.mean().item<double>();
        const double se = samples.std().item<double>() / std::sqrt(static_cast<double>(m));
        EXPECT_LE(std::abs(mean - exact(f, z)), 4 * se)
            << f << " M=" << variance_m << " pair " << i << ": " << mean << " vs " << exact(f, z);
        EXPECT_LT(se, 0.1) << f;  // a test with a huge standard error would assert nothing
      }
      // urf_estimate is the same sum, pair by pair on the diagonal.
      const at::Tensor estimate = urf_estimate(draw, xs, ws, b).diagonal();
      EXPECT_LE(testing::rel_max_error(estimate, at::real((phi * psi).sum(1))), 1e-12);
    }
  }
}

// ½ κ₁(u, v) = ‖u‖‖v‖ (sin θ + (π − θ) cos θ)/(2π) for the rows of u [n, d], v [k, d].
at::Tensor half_arccos1(const at::Tensor& u, const at::Tensor& v) {
  const at::Tensor nu = u.norm(2, 1, true), nv = v.norm(2, 1, true);
  const at::Tensor cosine = (at::matmul(u, v.t()) / (nu * nv.t())).clamp(-1, 1);
  const at::Tensor theta = at::acos(cosine);
  return nu * nv.t() * (at::sin(theta) + (std::numbers::pi - theta) * cosine) / (2 * std::numbers::pi);
}

TEST(SnnkTest, ReluGramAndLayerApproachTheArcCosineKernel) {
  const at::Tensor x = normal({6, 3}, 3), w = normal({4, 3}, 4), b = normal({4}, 5);
  const at::Tensor ones = at::ones({6, 1}, at::kDouble);
  const at::Tensor xa = at::cat({x, ones}, 1), wa = at::cat({w, b.unsqueeze(1)}, 1);
  const at::Tensor gram_exact = half_arccos1(xa, xa), layer_exact = half_arccos1(wa, xa);
  std::vector<double> gram_error, layer_error;
  for (int64_t m : {64, 16384}) {
    const at::Tensor g = normal({m, 4}, 100 + m);
    const at::Tensor phi = snnk_relu_features(x, g);
    gram_error.push_back(testing::rel_max_error(at::matmul(phi, phi.t()), gram_exact));
    const at::Tensor psi = snnk_relu_weights(w, b, g);  // the layer initialised from (W, b)
    layer_error.push_back(testing::rel_max_error(at::matmul(psi, phi.t()), layer_exact));
  }
  EXPECT_LT(gram_error[1], 0.05);
  EXPECT_LT(layer_error[1], 0.05);
  // The error shrinks like m^{-1/2}: 16× over a 256× larger m; ask for 4×.
  EXPECT_LT(gram_error[1] * 4, gram_error[0]) << gram_error[0] << " -> " << gram_error[1];
  EXPECT_LT(layer_error[1] * 4, layer_error[0]) << layer_error[0] << " -> " << layer_error[1];
}

// Gradient descent on ‖Φβ + c − y‖² + λ‖β‖² from zero, with the hand-derived gradient and Nesterov
// momentum (restarted when the loss would rise), until the gradient vanishes: the readout a trained
// network's last layer converges to.
std::pair<at::Tensor, double> descend(const at::Tensor& phi, const at::Tensor& y, double lambda) {
  const int64_t n = phi.size(0), k = phi.size(1);
  const at::Tensor design = at::cat({phi, at::ones({n, 1}, at::kDouble)}, 1);
  at::Tensor penalty = at::full({k + 1}, lambda, at::kDouble);
  penalty[k] = 0;  // the intercept is not penalised
  const double top = at::linalg_matrix_norm(design, 2).item<double>();
  const double step = 1 / (2 * (top * top + lambda));  // 1/L for the loss's Lipschitz gradient
  auto gradient = [&](const at::Tensor& theta) {
    return 2 * at::matmul(design.t(), at::matmul(design, theta) - y) + 2 * penalty * theta;
  };
  auto loss = [&](const at::Tensor& theta) {
    return (at::matmul(design, theta) - y).pow(2).sum().item<double>() +
           (penalty * theta * theta).sum().item<double>();
  };
  at::Tensor theta = at::zeros({k + 1}, at::kDouble), previous = theta;
  double momentum_t = 1, last = loss(theta);
  for (int iter = 1; iter <= 200000; ++iter) {
    const double next_t = (1 + std::sqrt(1 + 4 * momentum_t * momentum_t)) / 2;
    const at::Tensor look = theta + ((momentum_t - 1) / next_t) * (theta - previous);
    previous = theta;
    theta = look - step * gradient(look);
    momentum_t = next_t;
    if (iter % 50 == 0) {
      const double now = loss(theta);
      if (now > last) momentum_t = 1;  // restart
      last = now;
      if (gradient(theta).norm().item<double>() < 1e-11) break;
    }
  }
  return {theta.slice(0, 0, k), theta[k].item<double>()};
}

TEST(SnnkTest, ClosedFormBundleEqualsConvergedGradientDescent) {
  const at::Tensor x = normal({40, 3}, 6), x_test = normal({7, 3}, 7);
  const at::Tensor y = at::sin(at::matmul(x, at::tensor({1.0, -0.5, 0.3}, at::kDouble))) + 0.5;
  const double lambda = 0.5;
  for (const std::string activation : {"relu", "gaussian"}) {
    auto est =
        create_estimator("snnk", {{"features", 12}, {"lambda", lambda}, {"activation", activation}}, 8);
    est->fit(make_dataset(x, y, "synthetic"));
    testing::TempDir dir;
    est->save(dir / "model");
    const SafetensorsFile saved = SafetensorsFile::open(dir / "model" / "kernel_model.safetensors");
    const at::Tensor g = saved.load("projection");
    at::Tensor phi, phi_test;
    if (activation == "relu") {  // ReLU([x, 1] Gᵀ)/√m, written out
      auto map = [&](const at::Tensor& v) {
        return at::relu(at::matmul(at::cat({v, at::ones({v.size(0), 1}, at::kDouble)}, 1), g.t())) /
               std::sqrt(12.0);
      };
      phi = map(x);
      phi_test = map(x_test);
    } else {  // the URF map of x/d^{1/4}, split into real and imaginary parts
      const UrfDraw draw{activation, g, saved.load("frequencies"), 0.0};
      auto map = [&](const at::Tensor& v) {
        const at::Tensor f = urf_input_features(draw, v / std::pow(3.0, 0.25));
        return at::cat({at::real(f), at::imag(f)}, 1);
      };
      phi = map(x);
      phi_test = map(x_test);
    }
    const auto [beta, c] = descend(phi, y, lambda);
    EXPECT_LE(testing::rel_max_error(est->predict(x_test), at::matmul(phi_test, beta) + c), 1e-7)
        << activation;
  }
}

TEST(SnnkTest, EstimatorSavesAndReloadsForEachFeatureMap) {
  const at::Tensor x = normal({30, 4}, 9), x_test = normal({5, 4}, 10);
  const at::Tensor y = at::stack({x.sum(1), at::cos(x.select(1, 0))}, 1);  // two outputs
  for (const std::string activation : {"relu", "cos", "sin", "gaussian"}) {
    auto est =
        create_estimator("snnk", {{"features", 20}, {"activation", activation}, {"variance_m", 0.1}}, 11);
    est->fit(make_dataset(x, y, "synthetic"));
    const at::Tensor before = est->predict(x_test);
    EXPECT_EQ(before.sizes(), (at::IntArrayRef{5, 2})) << activation;
    testing::TempDir dir;
    est->save(dir / "model");
    auto back = load_estimator(dir / "model");
    EXPECT_EQ(back->method(), "snnk");
    EXPECT_TRUE(back->predict(x_test).equal(before)) << activation;
    // The readout fits the training targets better than their mean does.
    EXPECT_LT(est->report()["train_mse"].get<double>(), (y - y.mean(0)).pow(2).mean().item<double>());
  }
}

TEST(SnnkTest, BadInputIsRefusedNamingTheOption) {
  const Dataset data = make_dataset(normal({10, 2}, 12), normal({10}, 13), "synthetic");
  auto fit = [&](const Json& options) {
    return [&, options] { create_estimator("snnk", options, 1)->fit(data); };
  };
  kernel_testing::expect_error(fit({{"features", 0}}), "\"features\" must be >= 1");
  kernel_testing::expect_error(fit({{"activation", "tanh"}}), "\"activation\" must be");
  kernel_testing::expect_error(fit({{"lambda", -1.0}}), "\"lambda\" must be >= 0");
  kernel_testing::expect_error(fit({{"variance_m", -0.3}}), "\"variance_m\" must be > -0.25");
  kernel_testing::expect_error(fit({{"width", 3}}), "width");
  kernel_testing::expect_error(
      [&] {
        create_estimator("snnk", Json::object(), 1)
            ->fit(make_dataset(normal({4, 2}, 1), at::Tensor(), "no y"));
      },
      "no targets");
  kernel_testing::expect_error([] { urf_activation("gelu", at::zeros({1}, at::kDouble)); }, "\"gelu\"");
  at::Generator gen = at::detail::createCPUGenerator(0);
  const UrfDraw draw = draw_urf("cos", 4, 2, 0.0, gen);
  kernel_testing::expect_error(
      [&] {
        urf_weight_features(draw, normal({3, 2}, 1), at::zeros({2}, at::kDouble));
      },
      "the bias must be [k]");
}

}  // namespace
}  // namespace lowrank::kernel_methods
