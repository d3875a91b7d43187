// dpp_sampling: the Legendre basis against closed forms (P_0..P_3, k_m(±1) = m², orthonormality by
// Gauss–Legendre quadrature built here by Golub–Welsch); the samplers against what their laws imply,
// computed independently by quadrature: E_ρ[wφφᵀ] = I for Christoffel draws (Monte Carlo, 4 s.e.),
// the DPP's one-point intensity k_m/m (χ² over bins), the variance of a DPP linear statistic
// ∫g²K(x,x)dμ − ∬g(x)g(y)K(x,y)²dμdμ, and the unbiasedness of WLS under volume-rescaled sampling
// (mean coefficients = P_m f, 4 s.e.); and two-sample Kolmogorov–Smirnov tests against DPPy's
// MultivariateJacobiOPE draws (fixture: tests/fixtures/kernels/make_fx.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowrank/kernel_methods/dpp_sampling.h"
#include "lowrank/kernel_methods/estimator.h"
#include "tests/kernel_methods/kernel_testing.h"
#include "tests/stats_testing.h"

namespace lowrank::kernel_methods {
namespace {

using testing::ks_statistic;

using kernel_testing::expect_error;

OrthonormalBasis legendre(int64_t m) {
  return parse_basis("legendre:" + std::to_string(m));
}

// Gauss–Legendre nodes and weights for the uniform probability on [a, b] (weights sum to 1), from
// the eigen-decomposition of the Jacobi matrix (off-diagonal j/√(4j²−1)): exact for degree ≤ 2N−1.
struct Quadrature {
  at::Tensor nodes, weights;
};
Quadrature gauss_legendre(int64_t count, double a = -1, double b = 1) {
  at::Tensor jacobi = at::zeros({count, count}, at::kDouble);
  for (int64_t j = 1; j < count; ++j) {
    const double beta = j / std::sqrt(4.0 * j * j - 1);
    jacobi[j][j - 1] = beta;
    jacobi[j - 1][j] = beta;
  }
  auto [values, vectors] = at::linalg_eigh(jacobi);
  return {(a + b) / 2 + (b - a) / 2 * values, vectors[0].pow(2)};
}

// Mean and standard error of each column of samples [T, k].
std::pair<at::Tensor, at::Tensor> mean_and_se(const at::Tensor& samples) {
  return {samples.mean(0), samples.std(0) / std::sqrt(static_cast<double>(samples.size(0)))};
}

TEST(DppSamplingTest, LegendreBasisMatchesClosedForms) {
  const at::Tensor x = at::linspace(-1, 1, 9, at::kDouble);
  const at::Tensor phi = basis_matrix(legendre(4), x);
  const at::Tensor expected =
      at::stack({at::ones_like(x), std::sqrt(3.0) * x, std::sqrt(5.0) * (3 * x.pow(2) - 1) / 2,
                 std::sqrt(7.0) * (5 * x.pow(3) - 3 * x) / 2},
                1);
  EXPECT_LE((phi - expected).abs().max().item<double>(), 1e-12);
  for (int64_t m : {1, 5, 20, 40}) {
    const at::Tensor k = inverse_christoffel(legendre(m), at::tensor({-1.0, 1.0}, at::kDouble));
    EXPECT_NEAR(k[0].item<double>(), double(m * m), 1e-10 * m * m) << m;
    EXPECT_NEAR(k[1].item<double>(), double(m * m), 1e-10 * m * m) << m;
    EXPECT_EQ(christoffel_bound(legendre(m)), double(m * m));
  }
  // ∫φφᵀ dμ = I with 32 nodes (exact up to degree 63 ≥ 2·19).
  const Quadrature q = gauss_legendre(32);
  const at::Tensor phi20 = basis_matrix(legendre(20), q.nodes);
  const at::Tensor gram = at::matmul(phi20.t() * q.weights, phi20);
  EXPECT_LE((gram - at::eye(20, at::kDouble)).abs().max().item<double>(), 1e-12);
}

TEST(DppSamplingTest, ChristoffelDrawsGiveIdentityWeightedGramInExpectation) {
  const OrthonormalBasis basis = legendre(5);
  const at::Tensor x = sample_christoffel(basis, 20000, 7);
  const at::Tensor phi = basis_matrix(basis, x), w = optimal_weights(basis, x);
  const at::Tensor outer =
      (w.view({-1, 1, 1}) * phi.unsqueeze(2) * phi.unsqueeze(1)).reshape({x.size(0), -1});
  auto [mean, se] = mean_and_se(outer);
  const at::Tensor identity = at::eye(5, at::kDouble).reshape({-1});
  // Off the diagonal of I the s.e. is positive; on it too (w φ_j² varies).
  EXPECT_TRUE(((mean - identity).abs() <= 4 * se).all().item<bool>()) << "mean\n"
                                                                      << mean.view({5, 5}) << "\nse\n"
                                                                      << se.view({5, 5});
  EXPECT_TRUE(at::equal(x, sample_christoffel(basis, 20000, 7)));  // deterministic in the seed
}

// Pearson's χ² of the pooled points of 2000 DPP draws (m = 6) against the intensity K(x, x)/m =
// k_m/m over 20 equal bins. Under the null the points within a draw repel, so bin counts vary less
// than multinomially and the χ²(19) tail is conservative; the bound 43.82 is its 0.001 quantile.
TEST(DppSamplingTest, DppIntensityMatchesChristoffelDensity) {
  const OrthonormalBasis basis = legendre(6);
  constexpr int64_t kDraws = 2000, kBins = 20;
  std::vector<double> counts(kBins, 0);
  for (int64_t t = 0; t < kDraws; ++t) {
    const at::Tensor x = sample_projection_dpp(basis, 1000 + t);
    ASSERT_EQ(x.size(0), 6);
    for (int64_t i = 0; i < 6; ++i)
      counts[std::min<int64_t>(kBins - 1, static_cast<int64_t>((x[i].item<double>() + 1) / 2 * kBins))] += 1;
  }
  double chi2 = 0;
  const double total = kDraws * 6.0;
  for (int64_t b = 0; b < kBins; ++b) {
    const double lo = -1 + 2.0 * b / kBins, hi = lo + 2.0 / kBins;
    const Quadrature q = gauss_legendre(8, lo, hi);  // exact for k_m, degree 10
    const double prob =
        (q.weights * inverse_christoffel(basis, q.nodes)).sum().item<double>() / 6 * (hi - lo) / 2;
    const double expected = total * prob;
    chi2 += (counts[b] - expected) * (counts[b] - expected) / expected;
  }
  EXPECT_LT(chi2, 43.82);
}

// S = Σ_i g(x_i) over a DPP(m = 4) draw, g(x) = x: Var S = ∫g²K(x,x)dμ − ∬g(x)g(y)K(x,y)²dμdμ.
TEST(DppSamplingTest, LinearStatisticVarianceMatchesKernelFormula) {
  const OrthonormalBasis basis = legendre(4);
  const Quadrature q = gauss_legendre(16);
  const at::Tensor phi = basis_matrix(basis, q.nodes), kernel = at::matmul(phi, phi.t());
  const at::Tensor g = q.nodes;
  const double variance =
      (q.weights * g * g * kernel.diagonal()).sum().item<double>() -
      at::einsum("i,j,i,j,ij->", {q.weights, q.weights, g, g, kernel.pow(2)}).item<double>();
  constexpr int64_t kDraws = 4000;
  at::Tensor statistic = at::empty({kDraws}, at::kDouble);
  for (int64_t t = 0; t < kDraws; ++t) statistic[t] = sample_projection_dpp(basis, 50000 + t).sum();
  const at::Tensor centred = statistic - statistic.mean();
  const double sample_variance = centred.pow(2).mean().item<double>();
  const double fourth = centred.pow(4).mean().item<double>();
  const double se = std::sqrt((fourth - sample_variance * sample_variance) / kDraws);
  EXPECT_NEAR(sample_variance, variance, 4 * se) << "analytic " << variance;
}

// Under volume-rescaled sampling WLS is unbiased: E[ĉ] = P_m f, here for f = |x| (not in V_m) with
// m = 4, n = 6. P_m f by Gauss–Legendre on each half of [−1, 1], where |x| is a polynomial.
TEST(DppSamplingTest, VolumeRescaledWlsIsUnbiased) {
  const OrthonormalBasis basis = legendre(4);
  at::Tensor projection = at::zeros({4}, at::kDouble);
  for (auto [lo, hi] : {std::pair{-1.0, 0.0}, std::pair{0.0, 1.0}}) {
    const Quadrature q = gauss_legendre(8, lo, hi);
    projection += at::matmul(q.weights * q.nodes.abs(), basis_matrix(basis, q.nodes)) * (hi - lo) / 2;
  }
  constexpr int64_t kTrials = 4000;
  at::Tensor coefficients = at::empty({kTrials, 4}, at::kDouble);
  for (int64_t t = 0; t < kTrials; ++t) {
    const at::Tensor x = sample_volume_rescaled(basis, 6, 90000 + t);
    coefficients[t] = weighted_least_squares(basis, x, x.abs(), optimal_weights(basis, x)).coefficients;
  }
  auto [mean, se] = mean_and_se(coefficients);
  EXPECT_TRUE(((mean - projection).abs() <= 4 * se).all().item<bool>())
      << "mean " << mean << "\nP_m f " << projection << "\nse " << se;
}

TEST(DppSamplingTest, DppDrawHasExactlyMDistinctPoints) {
  const OrthonormalBasis basis = legendre(20);
  for (uint64_t seed : {1, 2, 3}) {
    const at::Tensor x = sample_projection_dpp(basis, seed);
    ASSERT_EQ(x.size(0), 20);
    const at::Tensor sorted = std::get<0>(x.sort());
    EXPECT_GT((sorted.slice(0, 1) - sorted.slice(0, 0, -1)).min().item<double>(), 0);
    // m distinct points of a DPP span V_m: the interpolation Gram is nonsingular.
    const at::Tensor phi = basis_matrix(basis, x);
    EXPECT_GT(at::linalg_eigvalsh(at::matmul(phi.t(), phi)).min().item<double>(), 1e-8);
  }
  EXPECT_EQ(sample_dpp_repetitions(basis, 3, 4).size(0), 60);
  EXPECT_EQ(sample_volume_rescaled(basis, 33, 4).size(0), 33);
  EXPECT_EQ(sample_design("repeat", basis, 40, 4).size(0), 40);
  EXPECT_TRUE(at::equal(sample_design("volume", basis, 30, 9), sample_volume_rescaled(basis, 30, 9)));
}

// Per draw (rows of x [T, m]): the largest point and the smallest gap between neighbours.
std::pair<at::Tensor, at::Tensor> largest_and_smallest_gap(const at::Tensor& draws) {
  const at::Tensor sorted = std::get<0>(draws.sort(1));
  const at::Tensor gaps = sorted.slice(1, 1) - sorted.slice(1, 0, -1);
  return {sorted.select(1, -1), std::get<0>(gaps.min(1))};
}

// DPPy's MultivariateJacobiOPE(5, [[0, 0]]) is the Jacobi ensemble with a = b = 0: the projection DPP
// of the first 5 Legendre polynomials, orthonormal w.r.t. Lebesgue measure on [−1, 1]. Ours is
// orthonormal w.r.t. the uniform probability; the kernels differ by the factor 2 of the reference
// measure, the point process is the same. 1500 draws each, ours against both of DPPy's samplers (the
// Killip–Nenciu tridiagonal model, independent of any chain rule, and its chain rule), on three
// statistics: all points pooled (the one-point intensity), the largest point of each draw, and the
// smallest gap of each draw (both sensitive to the repulsion, which the intensity is not). The last
// two are i.i.d. across draws, so the KS critical value is exact; pooled points of a DPP are
// negatively correlated, which makes the i.i.d. critical value conservative. Critical value
// c(α)·√((n_a + n_b)/(n_a n_b)) with c = 1.95 (α = 0.001 per comparison).
TEST(DppSamplingTest, ProjectionDppMatchesDppyJacobiEnsemble) {
  const SafetensorsFile f = kernel_testing::fixture("dpp.safetensors");
  const OrthonormalBasis basis = legendre(5);
  constexpr int64_t kDraws = 1500;
  at::Tensor ours = at::empty({kDraws, 5}, at::kDouble);
  for (int64_t t = 0; t < kDraws; ++t) ours[t] = sample_projection_dpp(basis, 7000 + t);
  const auto [our_max, our_gap] = largest_and_smallest_gap(ours);
  for (const char* name : {"tridiagonal", "chain_rule"}) {
    const at::Tensor theirs = f.load(name);
    ASSERT_EQ(theirs.size(0), kDraws);
    ASSERT_EQ(theirs.size(1), 5);
    const auto [their_max, their_gap] = largest_and_smallest_gap(theirs);
    const double pooled = 1.95 * std::sqrt(2.0 / (kDraws * 5)), per_draw = 1.95 * std::sqrt(2.0 / kDraws);
    EXPECT_LT(ks_statistic(ours, theirs), pooled) << name << ": pooled points";
    EXPECT_LT(ks_statistic(our_max, their_max), per_draw) << name << ": largest point";
    EXPECT_LT(ks_statistic(our_gap, their_gap), per_draw) << name << ": smallest gap";
  }
}

// A polynomial of degree < m is reproduced exactly by WLS on any design that spans V_m, through
// the estimator and a saved model.
TEST(DppSamplingTest, EstimatorReproducesPolynomialsAndRoundTrips) {
  const at::Tensor x = sample_volume_rescaled(legendre(6), 12, 3);
  auto polynomial = [](const at::Tensor& t) { return 1 + 2 * t - 3 * t.pow(3) + 0.5 * t.pow(5); };
  auto estimator = create_estimator("dpp_sampling", {{"basis", "legendre:6"}}, 0);
  estimator->fit(make_dataset(x.unsqueeze(1), polynomial(x), "polynomial"));
  const at::Tensor query = at::linspace(-1, 1, 11, at::kDouble);
  EXPECT_LE((estimator->predict(query.unsqueeze(1)) - polynomial(query)).abs().max().item<double>(), 1e-10);
  EXPECT_GT(estimator->report()["gram_min_eigenvalue"].get<double>(), 0);
  testing::TempDir dir;
  estimator->save(dir / "model");
  EXPECT_TRUE(at::allclose(load_estimator(dir / "model")->predict(query.unsqueeze(1)),
                           estimator->predict(query.unsqueeze(1)), 0, 0));
}

TEST(DppSamplingTest, BadInputIsRefusedByName) {
  const OrthonormalBasis basis = legendre(5);
  const at::Tensor x = at::linspace(-1, 1, 4, at::kDouble);
  expect_error([&] { weighted_least_squares(basis, x, x, at::ones_like(x)); }, "m = 5 > n = 4");
  expect_error([] { parse_basis("hermite:5"); }, "unknown basis \"hermite:5\"");
  expect_error([] { parse_basis("legendre:0"); }, "legendre:0");
  expect_error([] { parse_basis("legendre:x"); }, "legendre:x");
  expect_error([&] { sample_design("christoffel", basis, 0, 1); }, "got 0");
  expect_error([&] { sample_design("dpp", basis, 6, 1); }, "got n = 6");
  expect_error([&] { sample_design("repeat", basis, 12, 1); }, "got n = 12");
  expect_error([&] { sample_design("volume", basis, 4, 1); }, "n = 4 < m = 5");
  expect_error([&] { sample_design("sobol", basis, 4, 1); }, "unknown sampling method \"sobol\"");
  expect_error([&] { basis_matrix(basis, at::tensor({1.5}, at::kDouble)); }, "[-1, 1]");
  expect_error([] { create_estimator("dpp_sampling", {{"weights", "none"}}, 0); }, "\"weights\"");
}

}  // namespace
}  // namespace lowrank::kernel_methods
