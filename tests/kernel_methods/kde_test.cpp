// kde: log ρ̂ against scikit-learn's KernelDensity (fixture) and against a long-double brute force
// in a regime where the plain double sum of exponentials underflows; the diagnostics against their
// definitions computed by hand; the derived Gaussian thresholds against the spec's table.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/kde.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

TEST(KdeTest, MatchesScikitLearnKernelDensity) {
  const SafetensorsFile f = kernel_testing::fixture("kde.safetensors");
  const at::Tensor data = f.load("data"), queries = f.load("queries");
  EXPECT_LE(testing::rel_max_error(kde_log_density(data, queries, 0.7), f.load("log_density")), 1e-12);
  // Through the estimator and a saved model.
  auto kde = create_estimator("kde", {{"bandwidth", 0.7}}, 0);
  kde->fit(make_dataset(data, at::Tensor(), "kde fixture"));
  testing::TempDir dir;
  kde->save(dir / "model");
  EXPECT_LE(testing::rel_max_error(load_estimator(dir / "model")->predict(queries), f.load("log_density")),
            1e-12);
}

TEST(KdeTest, StaysExactWhereTheDoubleSumUnderflows) {
  // d = 40, h = 0.15: ‖x − y‖²/(2h²) ≈ 2d/0.045 ≈ 1800 > 745, so every e^{−…} is 0 in double, while
  // long double (down to e^{−11355}) still holds it: the brute force runs in long double.
  const at::Tensor data = normal({30, 40}, 51), queries = normal({5, 40}, 52);
  const double h = 0.15;
  const at::Tensor estimate = kde_log_density(data, queries, h);
  for (int64_t q = 0; q < 5; ++q) {
    long double sum = 0;
    bool all_underflow = true;
    for (int64_t i = 0; i < 30; ++i) {
      long double d2 = 0;
      for (int64_t k = 0; k < 40; ++k) {
        const long double diff = queries[q][k].item<double>() - data[i][k].item<double>();
        d2 += diff * diff;
      }
      const long double e = std::exp(-d2 / (2.0L * h * h));
      all_underflow = all_underflow && std::exp(static_cast<double>(-d2 / (2.0L * h * h))) == 0.0;
      sum += e;
    }
    ASSERT_TRUE(all_underflow) << "query " << q << " is not in the underflow regime";
    const long double expected = std::log(sum) - std::log(30.0L) -
                                 40 * std::log(static_cast<long double>(h)) -
                                 20 * std::log(2 * std::numbers::pi_v<long double>);
    EXPECT_NEAR(estimate[q].item<double>(), static_cast<double>(expected),
                1e-10 * std::abs(static_cast<double>(expected)));
  }
}

TEST(KdeTest, DiagnosticsFollowTheirDefinitions) {
  const at::Tensor data = normal({20, 3}, 53), queries = normal({4, 3}, 54);
  const double h = 0.5;
  const KdeDiagnostics diag = kde_diagnostics(data, queries, h);
  for (int64_t q = 0; q < 4; ++q) {
    std::vector<double> w(20);
    double total = 0;
    for (int64_t i = 0; i < 20; ++i) {
      w[i] = std::exp(-(queries[q] - data[i]).pow(2).sum().item<double>() / (2 * h * h));
      total += w[i];
    }
    double ipr = 0, largest = 0;
    for (double wi : w) {
      ipr += (wi / total) * (wi / total);
      largest = std::max(largest, wi / total);
    }
    EXPECT_NEAR(diag.ipr[q].item<double>(), ipr, 1e-12);
    EXPECT_NEAR(diag.max_weight[q].item<double>(), largest, 1e-12);
  }
  // Large h: every point weighs ≈ 1/n; tiny h: one point takes it all.
  EXPECT_NEAR(kde_diagnostics(data, queries, 1e3).ipr.mean().item<double>(), 1.0 / 20, 1e-4);
  EXPECT_NEAR(kde_diagnostics(data, queries, 1e-3).ipr.mean().item<double>(), 1.0, 1e-6);
  // The spread of log ρ̂/ρ: the standard deviation of the difference.
  const at::Tensor a = at::tensor({1.0, 2.0, 4.0}, at::kDouble), b = at::tensor({0.0, 0.0, 1.0}, at::kDouble);
  EXPECT_NEAR(log_ratio_spread(a, b), std::sqrt(2.0 / 3.0), 1e-12);
}

TEST(KdeTest, GaussianThresholdsSolveTheDerivedEquation) {
  // The spec's table (computed independently): α = 0.1 → h_G ≈ 1.37, 0.3 → 0.87, 0.5 → 0.65.
  for (auto [alpha, h_g] : {std::pair{0.1, 1.37}, {0.3, 0.87}, {0.5, 0.65}}) {
    const GaussianThresholds t = gaussian_thresholds(alpha);
    EXPECT_NEAR(t.h_g, h_g, 0.006) << "alpha " << alpha;
    EXPECT_NEAR(t.h_clt, std::sqrt(2.0) * t.h_g, 1e-12);
    const double h2 = t.h_g * t.h_g;
    EXPECT_NEAR(0.5 * std::log(1 + 1 / h2) - h2 / (2 * (1 + h2) * (1 + h2)), alpha, 1e-12);
  }
}

TEST(KdeTest, HeldOutBandwidthPicksTheBestGridPoint) {
  const at::Tensor data = normal({200, 2}, 55), heldout = normal({100, 2}, 56);
  const std::vector<double> grid = {0.05, 0.2, 0.4, 0.8, 3.0};
  const BandwidthSelection s = select_bandwidth(data, heldout, grid);
  ASSERT_EQ(s.mean_log_likelihood.size(), grid.size());
  const auto best = std::max_element(s.mean_log_likelihood.begin(), s.mean_log_likelihood.end());
  EXPECT_EQ(s.best, grid[best - s.mean_log_likelihood.begin()]);
  // For 200 points of N(0, I₂) the optimum is interior (Silverman's rule gives h ≈ 0.41).
  EXPECT_TRUE(s.best == 0.2 || s.best == 0.4 || s.best == 0.8) << s.best;
  kernel_testing::expect_error([&] { kde_log_density(data, heldout, 0.0); },
                               "bandwidth h must be > 0, got 0");
  kernel_testing::expect_error(
      [] {
        create_estimator("kde", {{"bandwidth", -2}}, 0);
      },
      "kde: option \"bandwidth\" must be > 0, got -2");
}

}  // namespace
}  // namespace lowrank::kernel_methods
