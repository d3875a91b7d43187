// hierarchical_poly: Var p = 1 by the closed form 2tr(A²)/2 written as explicit sums and by Monte
// Carlo within 4 standard errors; the stage-1 direction against the A that made the targets; the
// layerwise fit of p³ (d = 8, n = 16 000) below the kernel plateau of relative MSE 0.4; save/load; bad
// options.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <filesystem>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/hierarchical_poly.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

using kernel_testing::SingleThreaded;

double cosine_to(const at::Tensor& v, const at::Tensor& a) {
  const at::Tensor flat = a.reshape({-1});
  return (at::dot(v, flat) / (v.norm() * flat.norm())).item<double>();
}

TEST(HierarchicalPolyTest, QuadraticFeatureHasUnitVariance) {
  at::Generator generator = at::detail::createCPUGenerator(3);
  const int64_t d = 8;
  const at::Tensor a = random_traceless_quadratic(d, generator);
  // Closed form: Var(xᵀAx) = 2 Σ_ij A_ij² and E xᵀAx = Σ_i A_ii, so Var p = Σ_ij A_ij² when tr A = 0.
  double trace = 0, frobenius2 = 0;
  for (int64_t i = 0; i < d; ++i) {
    trace += a[i][i].item<double>();
    for (int64_t j = 0; j < d; ++j) frobenius2 += std::pow(a[i][j].item<double>(), 2);
  }
  EXPECT_NEAR(trace, 0, 1e-12);
  EXPECT_NEAR(frobenius2, 1, 1e-12);
  EXPECT_NEAR(cosine_to(a.reshape({-1}), a.t()), 1, 1e-12);  // symmetric
  const int64_t n = 100000;
  const at::Tensor p = quadratic_feature(a, normal({n, d}, 5));
  const at::Tensor squares = (p - p.mean()).pow(2);
  const double variance = squares.mean().item<double>();
  const double standard_error = squares.std().item<double>() / std::sqrt(static_cast<double>(n));
  EXPECT_LT(std::abs(variance - 1), 4 * standard_error) << variance << " ± " << standard_error;
  EXPECT_LT(std::abs(p.mean().item<double>()), 4 / std::sqrt(static_cast<double>(n)));
}

TEST(HierarchicalPolyTest, StageOneLearnsTheDirectionOfA) {
  SingleThreaded single_threaded;
  at::Generator generator = at::detail::createCPUGenerator(11);
  const int64_t d = 8, n = 20000;
  const at::Tensor a = random_traceless_quadratic(d, generator);
  const at::Tensor x = normal({n, d}, 12);
  const at::Tensor p = quadratic_feature(a, x);
  const at::Tensor signs = at::tensor({1.0, -1.0, 1.0}, at::kDouble);
  // g(z) = z: E[pφ] = √2 vec A exactly, so only sampling error remains.
  const at::Tensor w_linear = hierarchical_poly_stage1(x, p, signs, 1e-3);
  for (int64_t j = 0; j < 3; ++j) EXPECT_GT(signs[j].item<double>() * cosine_to(w_linear[j], a), 0.99);
  EXPECT_NEAR(w_linear[0].norm().item<double>(), 1, 1e-12);
  // g(z) = z³: E[p³φ] adds A² and A³ terms of relative size O(1/d); at d = 8 the population
  // cosine is ≈ 0.98.
  const at::Tensor w_cubic = hierarchical_poly_stage1(x, p.pow(3), signs, 1e-3);
  EXPECT_GT(cosine_to(w_cubic[0], a), 0.96);
  EXPECT_LT(cosine_to(w_cubic[1], a), -0.96);
}

TEST(HierarchicalPolyTest, LayerwiseFitBeatsTheKernelPlateauAndRoundTrips) {
  SingleThreaded single_threaded;
  at::Generator generator = at::detail::createCPUGenerator(21);
  const int64_t d = 8, n = 16000;
  const at::Tensor a = random_traceless_quadratic(d, generator);
  const at::Tensor x = normal({n, d}, 22), x_test = normal({2000, d}, 23);
  const at::Tensor y = quadratic_feature(a, x).pow(3), y_test = quadratic_feature(a, x_test).pow(3);
  auto estimator = create_estimator("hierarchical_poly", Json::object(), 7);
  estimator->fit(make_dataset(x, y, "test"));
  const at::Tensor predicted = estimator->predict(x_test);
  const double relative_mse = ((predicted - y_test).pow(2).mean() / y_test.var()).item<double>();
  EXPECT_LT(relative_mse, 0.3);
  const auto dir = std::filesystem::temp_directory_path() / "lowrank_hierarchical_poly_test";
  std::filesystem::remove_all(dir);
  estimator->save(dir);
  const auto back = load_estimator(dir);
  EXPECT_TRUE(at::equal(back->predict(x_test), predicted));
  std::filesystem::remove_all(dir);
}

TEST(HierarchicalPolyTest, BadInputNamesTheOption) {
  kernel_testing::expect_error(
      [] {
        create_estimator("hierarchical_poly", Json{{"width", 0}}, 1);
      },
      "option \"width\" must be >= 1, got 0");
  kernel_testing::expect_error(
      [] {
        create_estimator("hierarchical_poly", Json{{"ridge", -1.0}}, 1);
      },
      "option \"ridge\" must be > 0, got -1");
  at::Generator generator = at::detail::createCPUGenerator(1);
  EXPECT_THROW(random_traceless_quadratic(1, generator), InvalidArgument);
  auto estimator = create_estimator("hierarchical_poly", Json::object(), 1);
  EXPECT_THROW(estimator->fit(make_dataset(normal({10, 3}, 1), at::Tensor(), "test")), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::kernel_methods
