// singular_likelihood: the logmeanexp estimate for a linear generator against the closed-form
// N(b, AAᵀ + σ²I) log-density within Monte Carlo error; the ELBO below that log-density, and equal
// to it at the exact (Gaussian) posterior when r = 1; the 1-D sliced W₁ against ∫|F − G| from the
// empirical CDFs; a fit on a circle in R³; the sieve floor against the collapsing plain MLE;
// save/load; bad options.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numbers>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/kernel_methods/dataset.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/singular_likelihood.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

using kernel_testing::SingleThreaded;

// log N(x; b, C) for one x, C = AAᵀ + σ²I, by a Cholesky factor: −½(D log 2π + log det C + ‖L⁻¹(x − b)‖²).
double exact_log_density(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, double sigma) {
  const int64_t d = x.size(0);
  const at::Tensor c = at::matmul(a, a.t()) + sigma * sigma * at::eye(d, at::kDouble);
  const at::Tensor l = at::linalg_cholesky(c);
  const at::Tensor white = at::linalg_solve_triangular(l, (x - b).unsqueeze(1), /*upper=*/false).squeeze(1);
  return -0.5 * (static_cast<double>(d) * std::log(2 * std::numbers::pi) +
                 2 * l.diagonal().log().sum().item<double>() + white.pow(2).sum().item<double>());
}

TEST(SingularLikelihoodTest, LinearGeneratorMatchesTheGaussianLogDensity) {
  SingleThreaded single_threaded;
  const at::Tensor a = normal({3, 2}, 1), b = normal({3}, 2), x = normal({4, 3}, 3);
  const double sigma = 0.7;
  const Generator linear{at::Tensor(), at::Tensor(), a, b};
  const int64_t m = 40000;
  const at::Tensor means = linear(normal({m, 2}, 4));
  const at::Tensor estimate = logmeanexp_log_likelihood(x, means, sigma);
  for (int64_t i = 0; i < 4; ++i) {
    // Delta-method standard error of log(mean w) for the weights w_m = N(x_i; G(z_m), σ²I).
    const at::Tensor w = at::exp(-(x[i] - means).pow(2).sum(1) / (2 * sigma * sigma));
    const double standard_error = (w.std() / (w.mean() * std::sqrt(static_cast<double>(m)))).item<double>();
    const double exact = exact_log_density(x[i], a, b, sigma);
    EXPECT_LT(std::abs(estimate[i].item<double>() - exact), 4 * standard_error + 1e-12)
        << i << ": " << estimate[i].item<double>() << " vs " << exact << " (s.e. " << standard_error << ")";
  }
}

TEST(SingularLikelihoodTest, ElboIsBelowTheLogDensityAndTightAtThePosterior) {
  SingleThreaded single_threaded;
  const at::Tensor a = normal({3, 1}, 5), b = normal({3}, 6), x = normal({5, 3}, 7);
  const double sigma = 0.8;
  const Generator linear{at::Tensor(), at::Tensor(), a, b};
  at::Generator rng = at::detail::createCPUGenerator(8);
  const at::Tensor elbo =
      gaussian_elbo(x, linear, sigma, normal({5, 1}, 9), normal({5, 1}, 10) * 0.5, 4000, rng);
  // r = 1: the posterior is N(μ*, s*²) with s*⁻² = 1 + AᵀA/σ², μ* = s*² Aᵀ(x − b)/σ²; there the ELBO equals
  // log p.
  const double precision = 1 + at::dot(a.squeeze(1), a.squeeze(1)).item<double>() / (sigma * sigma);
  const at::Tensor mu_star = at::matmul(x - b, a) / (sigma * sigma) / precision;
  const at::Tensor log_std_star = at::full({5, 1}, -0.5 * std::log(precision), at::kDouble);
  const at::Tensor tight = gaussian_elbo(x, linear, sigma, mu_star, log_std_star, 20000, rng);
  for (int64_t i = 0; i < 5; ++i) {
    const double exact = exact_log_density(x[i], a, b, sigma);
    EXPECT_LT(elbo[i].item<double>(), exact) << i;
    EXPECT_NEAR(tight[i].item<double>(), exact, 0.02) << i;
  }
}

TEST(SingularLikelihoodTest, OneDimensionalSlicedW1IsTheCdfIntegral) {
  const at::Tensor u = normal({7}, 11), v = normal({7}, 12) * 2 + 0.3;
  // ∫|F_u(t) − F_v(t)| dt over the merged sample points.
  std::vector<std::pair<double, int>> points;
  for (int64_t i = 0; i < 7; ++i)
    points.emplace_back(u[i].item<double>(), 0), points.emplace_back(v[i].item<double>(), 1);
  std::sort(points.begin(), points.end());
  double integral = 0, fu = 0, fv = 0;
  for (size_t k = 0; k + 1 < points.size(); ++k) {
    (points[k].second == 0 ? fu : fv) += 1.0 / 7;
    integral += std::abs(fu - fv) * (points[k + 1].first - points[k].first);
  }
  at::Generator rng = at::detail::createCPUGenerator(13);
  EXPECT_NEAR(sliced_wasserstein1(u.unsqueeze(1), v.unsqueeze(1), 5, rng), integral, 1e-12);
  EXPECT_NEAR(wasserstein1_1d(u, v), integral, 1e-12);
}

TEST(SingularLikelihoodTest, FitsACircleInR3AndRoundTrips) {
  SingleThreaded single_threaded;
  auto circle = [](int64_t n, uint64_t seed) {
    const at::Tensor angle = normal({n}, seed) * std::numbers::pi;
    const at::Tensor q = std::get<0>(at::linalg_qr(normal({3, 2}, 99)));
    return at::matmul(at::stack({at::cos(angle), at::sin(angle)}, 1), q.t());
  };
  const at::Tensor x = circle(300, 31);
  auto estimator =
      create_estimator("singular_likelihood", Json{{"steps", 300}, {"hidden", 16}, {"samples", 128}}, 3);
  estimator->fit(make_dataset(x, at::Tensor(), "test"));
  EXPECT_GE(estimator->report()["sigma"].get<double>(), 0.05);
  // The model's log-likelihood is higher on the circle than off it.
  const at::Tensor on = estimator->predict(circle(50, 32)), off = estimator->predict(circle(50, 33) * 0.3);
  EXPECT_GT(on.mean().item<double>(), off.mean().item<double>() + 1);
  const auto dir = std::filesystem::temp_directory_path() / "lowrank_singular_likelihood_test";
  std::filesystem::remove_all(dir);
  estimator->save(dir);
  EXPECT_TRUE(at::equal(load_estimator(dir)->predict(x), estimator->predict(x)));
  std::filesystem::remove_all(dir);
}

TEST(SingularLikelihoodTest, SieveFloorHoldsWhereThePlainMleCollapses) {
  SingleThreaded single_threaded;
  // Five points on a segment: a 1-D generator can pass through them all, so without a floor σ
  // shrinks towards 0 (the plain MLE's degeneracy); the sieve keeps σ ≥ floor.
  const at::Tensor x =
      at::linspace(-1, 1, 5, at::kDouble).unsqueeze(1) * at::tensor({1.0, 0.5}, at::kDouble).unsqueeze(0);
  const Json common{{"steps", 300}, {"hidden", 16}, {"samples", 128}, {"tau", 0.0}};
  Json floored = common, plain = common;
  floored["sigma_floor"] = 0.3;
  plain["sigma_floor"] = 0.0;
  auto sieve = create_estimator("singular_likelihood", floored, 4);
  sieve->fit(make_dataset(x, at::Tensor(), "test"));
  auto mle = create_estimator("singular_likelihood", plain, 4);
  mle->fit(make_dataset(x, at::Tensor(), "test"));
  EXPECT_GE(sieve->report()["sigma"].get<double>(), 0.3);
  EXPECT_LT(mle->report()["sigma"].get<double>(), 0.3);
}

TEST(SingularLikelihoodTest, BadInputNamesTheOption) {
  kernel_testing::expect_error(
      [] {
        create_estimator("singular_likelihood", Json{{"tau", -0.1}}, 1);
      },
      "option \"tau\" must be >= 0, got -0.1");
  kernel_testing::expect_error(
      [] {
        create_estimator("singular_likelihood", Json{{"samples", 0}}, 1);
      },
      "option \"samples\" must be >= 1, got 0");
  EXPECT_THROW(logmeanexp_log_likelihood(normal({2, 3}, 1), normal({4, 2}, 2), 1.0), InvalidArgument);
  EXPECT_THROW(wasserstein1_1d(normal({3}, 1), normal({4}, 2)), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::kernel_methods
