// SST's sampler (sst.h) against the paper's rule p(i) = ½·(1/d + σ_i/Σσ), written out here in
// float64: the closed form, and the empirical frequencies of many seeded draws by a χ² test that
// the neighbouring rules (p ∝ σ, which this file's sampler used before, and p ∝ σ²) fail.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/train/sst.h"

namespace lowrank::train {
namespace {

// The paper's mixture, computed independently of the implementation.
std::vector<double> mixture(const std::vector<double>& sigma) {
  double total = 0;
  for (double s : sigma) total += s;
  std::vector<double> p;
  for (double s : sigma) p.push_back(0.5 * (1.0 / static_cast<double>(sigma.size()) + s / total));
  return p;
}

std::vector<double> proportional(const std::vector<double>& sigma, int power) {
  double total = 0;
  for (double s : sigma) total += power == 1 ? s : s * s;
  std::vector<double> p;
  for (double s : sigma) p.push_back((power == 1 ? s : s * s) / total);
  return p;
}

// Pearson's χ² of observed counts against probabilities p over n draws.
double chi_squared(const std::vector<int64_t>& counts, const std::vector<double>& p, int64_t n) {
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = p[i] * static_cast<double>(n);
    const double diff = static_cast<double>(counts[i]) - expected;
    chi2 += diff * diff / expected;
  }
  return chi2;
}

// χ²(5) quantile at 1 − 10⁻³: a correct sampler fails this with probability 0.001 (and at a
// fixed seed, deterministically not).
constexpr double kChi2Critical5 = 20.515;

TEST(SstSamplerTest, ProbabilitiesAreThePapersMixture) {
  // σ = (3, 1, 0, 0), d = 4: ½·(¼ + (¾, ¼, 0, 0)) = (0.5, 0.25, 0.125, 0.125).
  const at::Tensor p = sst_probabilities(at::tensor({3.0, 1.0, 0.0, 0.0}));
  const std::vector<double> want{0.5, 0.25, 0.125, 0.125};
  ASSERT_EQ(p.numel(), 4);
  for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(p[i].item<double>(), want[i], 1e-15) << i;
  // Negative values count as 0; all zero gives the uniform distribution.
  const at::Tensor clamped = sst_probabilities(at::tensor({-2.0, 1.0}));
  EXPECT_NEAR(clamped[0].item<double>(), 0.25, 1e-15);
  EXPECT_NEAR(clamped[1].item<double>(), 0.75, 1e-15);
  const at::Tensor uniform = sst_probabilities(at::zeros({5}));
  EXPECT_TRUE(at::allclose(uniform, at::full({5}, 0.2, at::kDouble)));
}

TEST(SstSamplerTest, FrequenciesPassAChiSquaredTestAgainstThePapersRule) {
  const std::vector<double> sigma{8.0, 4.0, 2.0, 1.0, 0.5, 0.25};
  const at::Tensor sigma_t = at::tensor(sigma);
  constexpr int64_t kDraws = 6000;
  std::vector<int64_t> counts(sigma.size(), 0);
  for (int64_t seed = 0; seed < kDraws; ++seed)
    ++counts[static_cast<size_t>(sst_sample(sigma_t, 1, static_cast<uint64_t>(seed)).item<int64_t>())];
  EXPECT_LT(chi_squared(counts, mixture(sigma), kDraws), kChi2Critical5);
  // The same counts reject the neighbouring rules by far: the test can tell them apart.
  EXPECT_GT(chi_squared(counts, proportional(sigma, 1), kDraws), 10 * kChi2Critical5);
  EXPECT_GT(chi_squared(counts, proportional(sigma, 2), kDraws), 10 * kChi2Critical5);
}

TEST(SstSamplerTest, DrawsAreDistinctAndTheSecondFollowsTheRenormalisedRule) {
  // Without replacement: the second index of a draw of two is j with probability
  // Σ_{i≠j} p_i·p_j/(1 − p_i).
  const std::vector<double> sigma{8.0, 4.0, 2.0, 1.0, 0.5, 0.25};
  const std::vector<double> p = mixture(sigma);
  std::vector<double> second(p.size(), 0.0);
  for (size_t i = 0; i < p.size(); ++i)
    for (size_t j = 0; j < p.size(); ++j)
      if (i != j) second[j] += p[i] * p[j] / (1 - p[i]);
  constexpr int64_t kDraws = 6000;
  std::vector<int64_t> counts(sigma.size(), 0);
  for (int64_t seed = 0; seed < kDraws; ++seed) {
    const at::Tensor draw = sst_sample(at::tensor(sigma), 2, static_cast<uint64_t>(seed));
    ASSERT_NE(draw[0].item<int64_t>(), draw[1].item<int64_t>());
    ++counts[static_cast<size_t>(draw[1].item<int64_t>())];
  }
  EXPECT_LT(chi_squared(counts, second, kDraws), kChi2Critical5);
  // r = d draws every index once, even with zero singular values (each has p >= 1/(2d)).
  const at::Tensor all = sst_sample(at::tensor({0.0, 0.0, 5.0, 0.0}), 4, 3);
  EXPECT_TRUE(at::equal(std::get<0>(all.sort()), at::arange(4, at::kLong)));
  EXPECT_EQ(sst_sample(at::tensor({1.0, 2.0}), 0, 1).numel(), 0);
  EXPECT_THROW((void)sst_sample(at::tensor({1.0, 2.0}), 3, 1), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::train
