// rf_ridge: the ridge solution against scikit-learn's Ridge on the same ReLU features (fixture),
// the estimator round trip, the random-feature kernel's limit, and the eigenlearning risk against
// Monte Carlo ridge regression on power-law Gaussian features.
#include <gtest/gtest.h>

#include <cmath>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/gram.h"
#include "lowrank/kernel_methods/krr.h"
#include "lowrank/kernel_methods/rf_ridge.h"
#include "lowrank/linalg/random_features.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

TEST(RfRidgeTest, MatchesScikitLearnRidgeOnTheSameFeatures) {
  const SafetensorsFile f = kernel_testing::fixture("ridge.safetensors");
  const at::Tensor x = f.load("x"), g = f.load("g"), y = f.load("y"), x_test = f.load("x_test");
  const at::Tensor lambdas = f.load("lambdas");
  // φ(x) = ReLU(Gx/√d)/√k, the estimator's map.
  const at::Tensor phi = linalg::relu_features(x / std::sqrt(5.0), g);
  const at::Tensor phi_test = linalg::relu_features(x_test / std::sqrt(5.0), g);
  const RidgePath path = ridge_path(phi, y);
  for (int64_t i = 0; i < lambdas.size(0); ++i) {
    const at::Tensor beta = ridge_coefficients(path, lambdas[i].item<double>());
    EXPECT_LE(testing::rel_max_error(beta, f.load("coef_" + std::to_string(i))), 1e-9) << "lambda " << i;
    EXPECT_LE(testing::rel_max_error(at::matmul(phi_test, beta), f.load("prediction_" + std::to_string(i))),
              1e-9);
  }
}

TEST(RfRidgeTest, EstimatorFitsSavesAndReloads) {
  const SafetensorsFile f = kernel_testing::fixture("ridge.safetensors");
  const Dataset data = make_dataset(f.load("x"), f.load("y"), "ridge fixture");
  auto estimator = create_estimator("rf_ridge", {{"features", 40}, {"lambda", 0.1}}, 5);
  estimator->fit(data);
  const at::Tensor x_test = f.load("x_test");
  const at::Tensor before = estimator->predict(x_test);
  EXPECT_EQ(before.sizes(), (at::IntArrayRef{8}));
  testing::TempDir dir;
  estimator->save(dir / "model");
  auto back = load_estimator(dir / "model");
  EXPECT_EQ(back->method(), "rf_ridge");
  EXPECT_TRUE(back->predict(x_test).equal(before));
  // The fit equals the ridge solution on the saved projection, computed directly.
  const SafetensorsFile saved = SafetensorsFile::open(dir / "model" / "kernel_model.safetensors");
  const at::Tensor g = saved.load("projection");
  const at::Tensor phi = linalg::relu_features(data.x / std::sqrt(5.0), g);
  const at::Tensor beta = at::linalg_solve(at::matmul(phi.t(), phi) + 0.1 * at::eye(40, at::kDouble),
                                           at::matmul(phi.t(), data.y));
  EXPECT_LE(
      testing::rel_max_error(before, at::matmul(linalg::relu_features(x_test / std::sqrt(5.0), g), beta)),
      1e-9);
  // The fourier variant too.
  auto fourier = create_estimator("rf_ridge", {{"activation", "fourier"}, {"bandwidth", 2.0}}, 6);
  fourier->fit(data);
  fourier->save(dir / "fourier");
  EXPECT_TRUE(load_estimator(dir / "fourier")->predict(x_test).equal(fourier->predict(x_test)));
}

TEST(RfRidgeTest, RefusesBadOptions) {
  kernel_testing::expect_error(
      [] {
        create_estimator("rf_ridge", {{"lamda", 1.0}}, 0);
      },
      "unknown option \"lamda\" (known: features, activation, bandwidth, lambda)");
  kernel_testing::expect_error(
      [] {
        create_estimator("rf_ridge", {{"lambda", -1.0}}, 0);
      },
      "option \"lambda\" must be >= 0, got -1");
  kernel_testing::expect_error(
      [] {
        create_estimator("rf_ridge", {{"activation", "tanh"}}, 0);
      },
      "option \"activation\" must be \"relu\" or \"fourier\"");
  kernel_testing::expect_error([] { create_estimator("rf_rigde", Json::object(), 0); },
                               "unknown kernel method \"rf_rigde\"");
  auto estimator = create_estimator("rf_ridge", Json::object(), 0);
  kernel_testing::expect_error(
      [&] {
        estimator->fit(make_dataset(normal({4, 2}, 1), at::Tensor(), "no labels"));
      },
      "no labels has no targets y");
}

TEST(RfRidgeTest, RandomFeatureKernelTendsToTheArcCosineKernelAtRateOneOverRootK) {
  // ΦΦᵀ with φ = ReLU(Gx/√d)/√k → ½·arccos1(x/√d, y/√d) as k grows, error ∝ k^{-1/2}: the
  // relative Frobenius error, averaged over 4 seeds, falls by ≈ √64 = 8 from k = 128 to 8192.
  const at::Tensor x = normal({10, 6}, 41);
  const at::Tensor exact = gram({"arccos1"}, x / std::sqrt(6.0), x / std::sqrt(6.0)) / 2;
  auto error_at = [&](int64_t k) {
    double total = 0;
    for (uint64_t seed = 0; seed < 4; ++seed) {
      const at::Tensor phi = linalg::relu_features(x / std::sqrt(6.0), normal({k, 6}, 100 + seed));
      total += testing::rel_fro_error(at::matmul(phi, phi.t()), exact);
    }
    return total / 4;
  };
  const double coarse = error_at(128), fine = error_at(8192);
  const double slope = std::log(fine / coarse) / std::log(8192.0 / 128.0);
  EXPECT_NEAR(slope, -0.5, 0.15) << "errors " << coarse << " -> " << fine;
}

TEST(EigenlearningTest, PredictsRidgeRiskOnPowerLawGaussianFeatures) {
  // Features z ~ N(0, diag(λ)), λ_i = i^{-1.5}, M = 200 modes; target f = Σ v_i z_i/√λ_i with
  // v_i² ∝ i^{-1.5} (Σv² = 1), label noise ε² = 0.05; n = 100, ridge δ = 1e-2. KRR with the linear kernel
  // zᵀz' is ridge in z; its exact test MSE for a draw is Σ λ_i (β_i − v_i/√λ_i)² + ε². The mean over
  // 100 draws must be within 5% of the eigenlearning prediction, train MSE likewise.
  const int64_t modes = 200, n = 100, draws = 100;
  const double ridge = 1e-2, noise = 0.05;
  const at::Tensor index = at::arange(1, modes + 1, at::kDouble);
  const at::Tensor lambda = index.pow(-1.5);
  at::Tensor v = index.pow(-0.75);
  v = v / v.norm();
  const at::Tensor w = v / lambda.sqrt();
  at::Generator gen = at::detail::createCPUGenerator(7);
  double test = 0, train = 0;
  for (int64_t t = 0; t < draws; ++t) {
    const at::Tensor z = at::empty({n, modes}, at::kDouble).normal_(0, 1, gen) * lambda.sqrt();
    const at::Tensor y = at::matmul(z, w) + std::sqrt(noise) * at::empty({n}, at::kDouble).normal_(0, 1, gen);
    const at::Tensor alpha = at::linalg_solve(at::matmul(z, z.t()) + ridge * at::eye(n, at::kDouble), y);
    const at::Tensor beta = at::matmul(z.t(), alpha);
    test += (lambda * (beta - w).pow(2)).sum().item<double>() + noise;
    train += (at::matmul(z, beta) - y).pow(2).mean().item<double>();
  }
  test /= draws;
  train /= draws;
  const EigenlearningRisk risk = eigenlearning_risk(lambda, v, n, ridge, noise);
  EXPECT_NEAR(risk.test_mse / test, 1.0, 0.05) << "theory " << risk.test_mse << " vs " << test;
  EXPECT_NEAR(risk.train_mse / train, 1.0, 0.05) << "theory " << risk.train_mse << " vs " << train;
  // The conservation law holds at the κ found.
  EXPECT_NEAR((lambda / (lambda + risk.kappa)).sum().item<double>() + ridge / risk.kappa, n, 1e-8 * n);
  kernel_testing::expect_error(
      [&] { eigenlearning_risk(lambda.slice(0, 0, 10), v.slice(0, 0, 10), 20, 0.0, 0.0); },
      "ridgeless needs n < the number of modes");
}

}  // namespace
}  // namespace lowrank::kernel_methods
