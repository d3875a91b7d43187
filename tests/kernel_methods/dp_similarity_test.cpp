// dp_similarity: the ℓ1 trees exact at ε = ∞ against a brute-force double loop; one added point
// touching exactly d(L+1) count nodes; the Laplace noise of a query against its hand-derived
// variance and mean over 2000 seeds; ℓ2 through projections against brute-force distances (Monte
// Carlo); the Gaussian-kernel sketch against the exact kernel mean; the Gaussian mechanism's σ
// against a numerical hockey-stick divergence; the saved bytes against every training value.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "lowrank/kernel_methods/dp_similarity.h"
#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/format.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

at::Tensor uniform(at::IntArrayRef shape, double lo, double hi, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::empty(shape, at::kDouble).uniform_(lo, hi, gen);
}

// Σ_x Σ_j |clip(x_j) − y_j| by a double loop.
double brute_l1(const at::Tensor& x, const at::Tensor& y, double lower, double radius) {
  double total = 0;
  for (int64_t i = 0; i < x.size(0); ++i)
    for (int64_t j = 0; j < x.size(1); ++j) {
      const double v = std::clamp(x[i][j].item<double>(), lower, lower + radius);
      total += std::abs(v - y[j].item<double>());
    }
  return total;
}

DyadicSums exact_trees(const at::Tensor& x, int64_t levels, double lower, double radius) {
  at::Generator gen = at::detail::createCPUGenerator(0);
  return dyadic_build(x, levels, lower, radius, 0, 0, gen);
}

TEST(DpSimilarityTest, L1ExactAtInfinityOnBinEdgesAndBoundedBetween) {
  const int64_t levels = 4;
  const double lower = -1, radius = 2, width = radius / 16;
  const at::Tensor x = uniform({30, 3}, -1.3, 1.3, 1);  // some values outside the box: clipped
  const DyadicSums trees = exact_trees(x, levels, lower, radius);
  // Queries on bin edges (0..16 bins, so the box's ends too) and outside the box: exact.
  at::Tensor edges = (uniform({20, 3}, 0, 17, 2).floor() * width + lower);
  edges[0] = at::full({3}, -2.5, at::kDouble);
  edges[1] = at::full({3}, 3.0, at::kDouble);
  const at::Tensor on_edges = dyadic_distance_sums(trees, edges);
  for (int64_t q = 0; q < edges.size(0); ++q) {
    const double expected = brute_l1(x, edges[q], lower, radius);
    EXPECT_NEAR(on_edges[q].item<double>(), expected, 1e-10 * expected) << "query " << q;
  }
  // Anywhere else: each point sharing the query's bin is off by at most 2·width.
  const at::Tensor inside = uniform({20, 3}, -1, 1, 3);
  const at::Tensor estimates = dyadic_distance_sums(trees, inside);
  double worst_used = 0;
  for (int64_t q = 0; q < inside.size(0); ++q) {
    int64_t sharing = 0;
    for (int64_t i = 0; i < x.size(0); ++i)
      for (int64_t j = 0; j < 3; ++j) {
        const double v = std::clamp(x[i][j].item<double>(), lower, lower + radius);
        sharing +=
            std::floor((v - lower) / width) == std::floor((inside[q][j].item<double>() - lower) / width);
      }
    const double error = std::abs(estimates[q].item<double>() - brute_l1(x, inside[q], lower, radius));
    EXPECT_LE(error, 2 * width * static_cast<double>(sharing) + 1e-10) << "query " << q;
    worst_used = std::max(worst_used, error);
  }
  EXPECT_GT(worst_used, 0);  // the bound is not vacuous: some queries do share a bin
  EXPECT_NEAR(dyadic_count(trees), 30, 1e-12);
}

TEST(DpSimilarityTest, OneAddedPointChangesExactlyDTimesLPlusOneCountNodes) {
  const int64_t levels = 5, d = 4;
  const at::Tensor x = uniform({25, d}, 0, 3, 4);
  const at::Tensor extra = uniform({1, d}, 0, 3, 5);
  const DyadicSums before = exact_trees(x, levels, 0, 3);
  const DyadicSums after = exact_trees(at::cat({x, extra}), levels, 0, 3);
  const at::Tensor count_change = after.counts - before.counts;
  EXPECT_EQ(count_change.ne(0).sum().item<int64_t>(), d * (levels + 1));
  EXPECT_TRUE(count_change.eq(0).logical_or(count_change.eq(1)).all().item<bool>());
  // Per coordinate one node per level, and the changed sums carry the point's value.
  for (int64_t j = 0; j < d; ++j) {
    EXPECT_EQ(count_change[j].ne(0).sum().item<int64_t>(), levels + 1);
    const at::Tensor sum_change = (after.sums[j] - before.sums[j]).masked_select(count_change[j].ne(0));
    EXPECT_LE((sum_change - extra[0][j]).abs().max().item<double>(), 1e-12);
  }
}

TEST(DpSimilarityTest, QueryNoiseHasTheLaplaceVarianceAndNoBias) {
  // d = 2, L = 3, ε = 1 split ½/½: count nodes Lap(b_c), b_c = d(L+1)/ε₁ = 16; sums Lap(b_s), b_s = R·16.
  DpOptions options;
  options.epsilon = 1;
  options.levels = 3;
  options.lower = 0;
  options.radius = 2;
  const at::Tensor x = uniform({6, 2}, 0, 2, 6);
  // Queries on bin edges (bins 3 and 5 of 8), where the ε = ∞ query is exact.
  const at::Tensor y = at::tensor(std::vector<double>{0.75, 1.25}, at::kDouble).reshape({1, 2});
  const double exact = brute_l1(x, y[0], 0, 2);
  // Hand derivation: the query is Σ_j [y'_j(2C_< − n) − 2S_< + S_tot]; C_< sums popcount(b_j) nodes, n and
  // S_tot are the root, so Var = Σ_j 2b_c²(4y_j² p_j + y_j²) + 2b_s²(4p_j + 1), p_j = popcount(b_j).
  const double bc = 2.0 * 4 / 0.5, bs = 2 * bc;
  double variance = 0;
  for (int64_t j = 0; j < 2; ++j) {
    const double yj = y[0][j].item<double>();
    const auto bin = static_cast<unsigned>(std::floor(yj / 2 * 8));
    const double p = std::popcount(bin);
    variance += 2 * bc * bc * (4 * yj * yj * p + yj * yj) + 2 * bs * bs * (4 * p + 1);
  }
  const int seeds = 2000;
  std::vector<double> errors;
  for (int s = 0; s < seeds; ++s) {
    at::Generator gen = at::detail::createCPUGenerator(1000 + s);
    const DpStructure structure = dp_build(x, options, gen);
    errors.push_back(dp_similarity_sums(structure, y)[0].item<double>() - exact);
  }
  double mean = 0, m2 = 0, m4 = 0;
  for (double e : errors) mean += e / seeds;
  for (double e : errors) m2 += (e - mean) * (e - mean) / seeds, m4 += std::pow(e - mean, 4) / seeds;
  const double se_variance = std::sqrt((m4 - m2 * m2) / seeds);
  EXPECT_NEAR(m2, variance, 4 * se_variance) << "sample variance " << m2 << ", analytic " << variance;
  EXPECT_NEAR(mean, 0, 4 * std::sqrt(variance / seeds));  // unbiased
}

TEST(DpSimilarityTest, L2ThroughProjectionsMatchesBruteForceDistances) {
  DpOptions options;
  options.epsilon = std::numeric_limits<double>::infinity();
  options.metric = "l2";
  options.levels = 10;
  options.lower = -2;
  options.radius = 4;
  options.projections = 1000;
  const at::Tensor x = uniform({12, 3}, -1, 1, 7);
  const at::Tensor y = uniform({3, 3}, -1, 1, 8);
  at::Generator gen = at::detail::createCPUGenerator(9);
  const DpStructure structure = dp_build(x, options, gen);
  const at::Tensor estimates = dp_similarity_sums(structure, y);
  const at::Tensor& g = structure.projections;  // [k, d]
  const double k = 1000, half = 1.5 * 4 * std::sqrt(3.0), width = 2 * half / 1024;
  for (int64_t q = 0; q < 3; ++q) {
    const at::Tensor diff = x - y[q];                             // [n, d]
    const double exact = diff.norm(2, {1}).sum().item<double>();  // Σ ‖x − y‖₂
    // Per projection: √(π/2) Σ_x |gᵀ(x − y)|, an unbiased estimate of the same sum.
    const at::Tensor per = at::matmul(diff, g.t()).abs().sum(0) * std::sqrt(M_PI / 2);
    const double mc = per.mean().item<double>(), se = per.std().item<double>() / std::sqrt(k);
    // The tree reproduces the projections' sum up to the binning bound (2 widths per point per projection).
    EXPECT_NEAR(estimates[q].item<double>(), mc, std::sqrt(M_PI / 2) * 2 * width * 12);
    EXPECT_NEAR(mc, exact, 4 * se) << "query " << q;
    EXPECT_LT(se, 0.05 * exact);  // the Monte Carlo check has teeth
  }
}

// The Gaussian sketch's estimates for the queries y against the points x, both in the coordinates
// the random features read (after the JL map, if any), checked two ways: against the sketch
// computed by hand, the mean over features of Σ_x 2 cos(w_jᵀx + b_j) cos(w_jᵀy + b_j) (to rounding),
// and against its expectation over the features, the exact Gaussian kernel sum (within 4 standard
// errors of the feature mean).
void expect_gaussian_sketch(const DpStructure& structure, const at::Tensor& estimates, const at::Tensor& x,
                            const at::Tensor& y, double bandwidth) {
  const int64_t n = x.size(0);
  const double features = static_cast<double>(structure.frequencies.size(0));
  for (int64_t q = 0; q < y.size(0); ++q) {
    const at::Tensor wx = at::matmul(x, structure.frequencies.t()) + structure.phases;
    const at::Tensor wy = at::matmul(y[q], structure.frequencies.t()) + structure.phases;
    const at::Tensor per = (2 * at::cos(wx) * at::cos(wy)).sum(0);
    EXPECT_NEAR(estimates[q].item<double>(), per.mean().item<double>(), 1e-10 * n) << q;
    double exact = 0;
    for (int64_t i = 0; i < n; ++i)
      exact += std::exp(-(x[i] - y[q]).pow(2).sum().item<double>() / (2 * bandwidth * bandwidth));
    EXPECT_NEAR(per.mean().item<double>(), exact, 4 * per.std().item<double>() / std::sqrt(features)) << q;
  }
}

TEST(DpSimilarityTest, GaussianSketchMatchesTheExactKernelMean) {
  DpOptions options;
  options.epsilon = std::numeric_limits<double>::infinity();
  options.metric = "gaussian";
  options.bandwidth = 0.8;
  options.features = 6000;
  options.projections = 4;  // ≥ d: no JL map
  const at::Tensor x = normal({15, 3}, 10) * 0.5;
  const at::Tensor y = normal({4, 3}, 11) * 0.5;
  at::Generator gen = at::detail::createCPUGenerator(12);
  const DpStructure structure = dp_build(x, options, gen);
  EXPECT_FALSE(structure.projections.defined());
  const at::Tensor estimates = dp_similarity_sums(structure, y);
  EXPECT_EQ(dp_count(structure), 15);
  expect_gaussian_sketch(structure, estimates, x, y, 0.8);
}

TEST(DpSimilarityTest, GaussianSketchProjectsByJlWhenKIsBelowD) {
  DpOptions options;
  options.epsilon = std::numeric_limits<double>::infinity();
  options.metric = "gaussian";
  options.bandwidth = 3.0;
  options.features = 4000;
  options.projections = 40;  // < d = 120: the JL map P [k, d] is drawn
  const at::Tensor x = normal({12, 120}, 20) * 0.3;
  const at::Tensor y = normal({3, 120}, 21) * 0.3;
  at::Generator gen = at::detail::createCPUGenerator(22);
  const DpStructure structure = dp_build(x, options, gen);
  const at::Tensor& p = structure.projections;
  ASSERT_TRUE(p.defined());
  ASSERT_EQ(p.sizes(), at::IntArrayRef({40, 120}));
  // Entries N(0, 1/k): 4800 draws, so their mean square is 1/k within 4 standard errors (√(2/4800)/k).
  EXPECT_NEAR(p.square().mean().item<double>(), 1.0 / 40, 4 * std::sqrt(2.0 / 4800) / 40);
  EXPECT_NEAR(p.mean().item<double>(), 0, 4 / std::sqrt(40 * 4800.0));
  ASSERT_EQ(structure.frequencies.size(1), 40);  // the features act on the projected coordinates
  const at::Tensor estimates = dp_similarity_sums(structure, y);
  // The sketch runs on the projected points Px, Py: its expectation is their Gaussian kernel sum.
  expect_gaussian_sketch(structure, estimates, at::matmul(x, p.t()), at::matmul(y, p.t()), 3.0);
}

TEST(DpSimilarityTest, GaussianMechanismSigmaMeetsDeltaByNumericalIntegration) {
  // δ(σ) = ∫ max(0, p(t) − e^ε q(t)) dt with p = N(0, σ²), q = N(Δ, σ²): the hockey-stick divergence,
  // integrated by the midpoint rule.
  auto hockey_stick = [](double sigma, double sensitivity, double epsilon) {
    const double lo = -sensitivity - 12 * sigma, hi = sensitivity + 12 * sigma;
    const int steps = 400000;
    const double h = (hi - lo) / steps;
    double total = 0;
    for (int i = 0; i < steps; ++i) {
      const double t = lo + (i + 0.5) * h;
      const double p = std::exp(-t * t / (2 * sigma * sigma)),
                   q = std::exp(-(t - sensitivity) * (t - sensitivity) / (2 * sigma * sigma));
      total += std::max(0.0, p - std::exp(epsilon) * q);
    }
    return total * h / (sigma * std::sqrt(2 * M_PI));
  };
  for (const auto& [epsilon, delta] : {std::pair{0.5, 1e-5}, std::pair{2.0, 1e-6}}) {
    const double sigma = gaussian_mechanism_sigma(std::sqrt(2.0), epsilon, delta);
    EXPECT_NEAR(hockey_stick(sigma, std::sqrt(2.0), epsilon), delta, 1e-3 * delta) << epsilon;
    if (epsilon < 1) {  // tighter than the classical σ = Δ√(2 ln(1.25/δ))/ε
      EXPECT_LT(sigma, std::sqrt(2.0) * std::sqrt(2 * std::log(1.25 / delta)) / epsilon);
    }
  }
}

std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// How many of x's values appear as 8 raw bytes in `bytes`.
int64_t values_found(const at::Tensor& x, const std::string& bytes) {
  int64_t found = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.reshape({-1})[i].item<double>();
    char raw[sizeof(double)];
    std::memcpy(raw, &v, sizeof v);
    found += bytes.find(std::string(raw, sizeof raw)) != std::string::npos;
  }
  return found;
}

TEST(DpSimilarityTest, SavedModelHoldsNoTrainingRow) {
  testing::TempDir dir;
  const at::Tensor x = uniform({10, 3}, 0, 1, 13);
  const Dataset data =
      make_dataset(x, at::tensor(std::vector<double>{0, 1, 0, 1, 0, 1, 0, 1, 0, 1}, at::kDouble), "test");
  for (const std::string metric : {"l1", "l2", "gaussian"}) {
    const auto model = dp_fit(data, {{"epsilon", 1.0}, {"metric", metric}}, 3);
    model->save(dir / metric);
    const std::string bytes =
        file_bytes(dir / metric / kModelTensorsFile) + file_bytes(dir / metric / kModelConfigFile);
    EXPECT_EQ(values_found(x, bytes), 0) << metric;
    EXPECT_EQ(bytes.find(data.sha256), std::string::npos) << metric;  // not even the data's hash
  }
  // The generic path (`lowrank kernel fit --method dp_similarity`) keeps no hash either, while the
  // other methods do record theirs (the check has teeth).
  for (const std::string method : {"dp_similarity", "kde"}) {
    auto model = create_estimator(method, Json::object(), 3);
    model->fit(data);
    model->save(dir / ("generic_" + method));
    const bool hashed =
        file_bytes(dir / ("generic_" + method) / kModelConfigFile).find(data.sha256) != std::string::npos;
    EXPECT_EQ(hashed, method != "dp_similarity") << method;
  }
  // The search has teeth: at ε = ∞ a point alone in its leaf is stored as itself (lower = 0).
  const auto exact = dp_fit(data, {{"epsilon", "inf"}}, 3);
  exact->save(dir / "exact");
  EXPECT_GT(values_found(x, file_bytes(dir / "exact" / kModelTensorsFile)), 0);
}

TEST(DpSimilarityTest, ClassifierSeparatesClassesAndReloads) {
  // Three well-separated clusters in the box [0, 6]^2.
  const at::Tensor centres = at::tensor(std::vector<double>{1, 1, 5, 1, 3, 5}, at::kDouble).reshape({3, 2});
  const at::Tensor labels = at::arange(3, at::kLong).repeat_interleave(40);
  const at::Tensor x = centres.index_select(0, labels) + 0.3 * normal({120, 2}, 14);
  const Dataset data = make_dataset(x, labels.to(at::kDouble), "test");
  testing::TempDir dir;
  // ε large enough that the noise is small next to the gaps between class means: the l2 structure's
  // sensitivities grow with k(L+1) = 448 projected nodes and the projections' range 2s ≈ 25, so it needs far
  // more.
  for (const auto& [metric, epsilon] :
       {std::pair{"l1", 50.0}, std::pair{"l2", 1e4}, std::pair{"gaussian", 50.0}}) {
    const auto model =
        dp_fit(data, {{"epsilon", epsilon}, {"metric", metric}, {"radius", 6}, {"levels", 6}}, 5);
    const at::Tensor predicted = model->predict(x);
    EXPECT_GE(predicted.eq(labels.to(at::kDouble)).to(at::kDouble).mean().item<double>(), 0.95) << metric;
    model->save(dir / metric);
    const auto back = load_estimator(dir / metric);
    EXPECT_TRUE(at::equal(back->predict(x), predicted)) << metric;
    EXPECT_LE(testing::max_abs_diff(dp_class_scores(*back, x), dp_class_scores(*model, x)), 1e-12) << metric;
  }
}

TEST(DpSimilarityTest, BadOptionsAreRefusedNamingThem) {
  const Dataset data = make_dataset(at::zeros({2, 2}, at::kDouble),
                                    at::tensor(std::vector<double>{0, 1}, at::kDouble), "test");
  kernel_testing::expect_error([&] { dp_fit(data, {{"epsilon", 0}}, 0); }, "\"epsilon\" must be > 0");
  kernel_testing::expect_error([&] { dp_fit(data, {{"epsilon", -1}}, 0); }, "\"epsilon\" must be > 0");
  kernel_testing::expect_error(
      [&] {
        dp_fit(data, {{"epsilon", "nan"}}, 0);
      },
      "\"epsilon\" must be a number");
  kernel_testing::expect_error([&] { dp_fit(data, {{"keep_data", true}}, 0); }, "\"keep_data\" is refused");
  kernel_testing::expect_error([&] { dp_fit(data, {{"metric", "cosine"}}, 0); }, "\"metric\" must be l1, l2");
  kernel_testing::expect_error([&] { dp_fit(data, {{"levels", 0}}, 0); }, "\"levels\" must be in [1, 24]");
  kernel_testing::expect_error([&] { dp_fit(data, {{"raw", true}}, 0); }, "unknown option \"raw\"");
  DpOptions nan_epsilon;
  nan_epsilon.epsilon = std::nan("");
  kernel_testing::expect_error([&] { validate(nan_epsilon); }, "\"epsilon\" must be > 0");
}

}  // namespace
}  // namespace lowrank::kernel_methods
