// mcr2: the coding rates against their closed forms (R_c(Z, 11ᵀ/n) = R(Z), R_c(Z, I) =
// ½log(1 + d/ε²) for unit features, a block membership = MCR²'s partition form, each evaluated
// through eigenvalues of the Gram rather than the Cholesky path); the Sinkhorn membership against
// the 2×2 closed form, its marginals and POT's ot.sinkhorn (fixture); the MLC objective's gradient against
// central finite differences in fp64; spectral clustering of a block Γ; subspace clustering end to end.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <tuple>

#include "lowrank/kernel_methods/estimator.h"
#include "lowrank/kernel_methods/mcr2.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::kernel_methods {
namespace {

using kernel_testing::normal;

at::Tensor unit_rows(const at::Tensor& a) {
  return a / a.norm(2, 1, true);
}

using kernel_testing::SingleThreaded;

// ½ logdet(I + c AᵀA) = ½ Σ log(1 + c σᵢ²) over the eigenvalues of the Gram AAᵀ.
double half_logdet_via_gram(const at::Tensor& a, double c) {
  return 0.5 * at::log1p(c * at::linalg_eigvalsh(at::matmul(a, a.t())).clamp_min(0)).sum().item<double>();
}

TEST(Mcr2Test, UniformMembershipGivesTheTotalRate) {
  const at::Tensor z = unit_rows(normal({12, 4}, 1));
  const double eps2 = 0.3, n = 12, d = 4;
  const double r = half_logdet_via_gram(z, d / (n * eps2));
  EXPECT_NEAR(coding_rate(z, eps2).item<double>(), r, 1e-12 * r);
  const at::Tensor uniform = at::full({12, 12}, 1.0 / 12, at::kDouble);
  EXPECT_NEAR(clustered_coding_rate(z, uniform, eps2).item<double>(), r, 1e-12 * r);
}

TEST(Mcr2Test, IdentityMembershipCodesEachPointAlone) {
  const at::Tensor z = unit_rows(normal({10, 5}, 2));
  const double eps2 = 0.4, d = 5;
  const double expected = 0.5 * std::log(1 + d / eps2);
  EXPECT_NEAR(clustered_coding_rate(z, at::eye(10, at::kDouble), eps2).item<double>(), expected,
              1e-12 * expected);
}

TEST(Mcr2Test, BlockMembershipIsTheMcr2PartitionRate) {
  const at::Tensor z = unit_rows(normal({9, 3}, 3));
  const double eps2 = 0.5, n = 9, d = 3;
  // Clusters {0..3} and {4..8}: Γ has blocks 11ᵀ/4 and 11ᵀ/5.
  at::Tensor gamma = at::zeros({9, 9}, at::kDouble);
  gamma.slice(0, 0, 4).slice(1, 0, 4).fill_(0.25);
  gamma.slice(0, 4, 9).slice(1, 4, 9).fill_(0.2);
  double expected = 0;
  for (auto [start, end] : {std::pair<int64_t, int64_t>{0, 4}, {4, 9}}) {
    const double nk = static_cast<double>(end - start);
    expected += (nk / n) * half_logdet_via_gram(z.slice(0, start, end), d / (nk * eps2));
  }
  EXPECT_NEAR(clustered_coding_rate(z, gamma, eps2).item<double>(), expected, 1e-12 * expected);
}

TEST(Mcr2Test, SinkhornMembershipMatchesTheTwoByTwoClosedForm) {
  // Unit c₁, c₂ at angle θ: cost −CCᵀ, uniform marginals. The plan's cross ratio p²/q² equals
  // K₁₁K₂₂/(K₁₂K₂₁) with K = exp(CCᵀ/η), so p/q = exp((1 − cos θ)/η) and Γ₁₁ = 2p = r/(1 + r).
  const double theta = 0.9, eta = 0.3;
  const at::Tensor c = at::tensor({1.0, 0.0, std::cos(theta), std::sin(theta)}, at::kDouble).reshape({2, 2});
  const at::Tensor gamma = doubly_stochastic_membership(c, eta, 200);
  const double ratio = std::exp((1 - std::cos(theta)) / eta);
  EXPECT_NEAR(gamma[0][0].item<double>(), ratio / (1 + ratio), 1e-12);
  EXPECT_NEAR(gamma[0][1].item<double>(), 1 / (1 + ratio), 1e-12);
  EXPECT_NEAR(gamma[1][1].item<double>(), ratio / (1 + ratio), 1e-12);
}

// Γ = n · Sinkhorn_η(CCᵀ) against n · ot.sinkhorn(1/n, 1/n, −CCᵀ, η) from POT (fixture:
// tests/fixtures/kernels/make_fx.py), 10 unit rows in R³, η = 0.2, both run to convergence.
TEST(Mcr2Test, SinkhornMembershipMatchesPot) {
  const SafetensorsFile f = kernel_testing::fixture("sinkhorn.safetensors");
  const at::Tensor gamma = doubly_stochastic_membership(f.load("c"), 0.2, 1000);
  EXPECT_LE(testing::max_abs_diff(gamma, f.load("gamma")), 1e-12);
}

TEST(Mcr2Test, SinkhornMembershipIsDoublyStochasticAndSymmetric) {
  const at::Tensor c = unit_rows(normal({15, 3}, 4));
  const at::Tensor gamma = doubly_stochastic_membership(c, 0.2, 500);
  EXPECT_LE((gamma.sum(0) - 1).abs().max().item<double>(), 1e-10);
  EXPECT_LE((gamma.sum(1) - 1).abs().max().item<double>(), 1e-10);
  EXPECT_LE((gamma - gamma.t()).abs().max().item<double>(), 1e-10);
  // The fixed point: Γ_ij ∝ e^{c_iᵀc_j/η} up to row and column scalings, i.e. every 2×2 cross
  // ratio Γ_ij Γ_kl / (Γ_il Γ_kj) equals that of the kernel.
  const at::Tensor log_kernel = at::matmul(c, c.t()) / 0.2;
  const at::Tensor lg = at::log(gamma);
  for (auto [i, j, k, l] : {std::array<int64_t, 4>{0, 1, 2, 3}, {4, 9, 7, 14}, {3, 3, 11, 5}}) {
    const double lhs = (lg[i][j] + lg[k][l] - lg[i][l] - lg[k][j]).item<double>();
    const double rhs =
        (log_kernel[i][j] + log_kernel[k][l] - log_kernel[i][l] - log_kernel[k][j]).item<double>();
    EXPECT_NEAR(lhs, rhs, 1e-10);
  }
}

// ΔR(W_f, W_c) = R(Z) − R_c(Z, Γ(C)) in fp64.
double rate_reduction(const at::Tensor& x, const at::Tensor& wf, const at::Tensor& wc) {
  const at::Tensor z = mcr2_features(x, wf);
  const at::Tensor gamma = doubly_stochastic_membership(mcr2_features(x, wc), 0.25, 20);
  return (coding_rate(z, 0.5) - clustered_coding_rate(z, gamma, 0.5)).item<double>();
}

TEST(Mcr2Test, GradientMatchesFiniteDifferences) {
  SingleThreaded single_threaded;
  const at::Tensor x = normal({8, 5}, 5);
  const at::Tensor wf = normal({3, 5}, 6), wc = normal({3, 5}, 7);
  const at::Tensor lf = wf.clone().set_requires_grad(true), lc = wc.clone().set_requires_grad(true);
  {
    const at::Tensor z = mcr2_features(x, lf);
    const at::Tensor gamma = doubly_stochastic_membership(mcr2_features(x, lc), 0.25, 20);
    (coding_rate(z, 0.5) - clustered_coding_rate(z, gamma, 0.5)).backward();
  }
  const double h = 1e-6;
  for (auto [w, grad, is_feature] : {std::tuple{wf, lf.grad(), true}, std::tuple{wc, lc.grad(), false}}) {
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 5; ++j) {
        at::Tensor plus = w.clone(), minus = w.clone();
        plus[i][j] += h;
        minus[i][j] -= h;
        const double fd = is_feature ? (rate_reduction(x, plus, wc) - rate_reduction(x, minus, wc)) / (2 * h)
                                     : (rate_reduction(x, wf, plus) - rate_reduction(x, wf, minus)) / (2 * h);
        EXPECT_NEAR(grad[i][j].item<double>(), fd, 1e-7 + 1e-6 * std::abs(fd))
            << (is_feature ? "feature" : "cluster") << " head [" << i << "][" << j << "]";
      }
  }
}

TEST(Mcr2Test, SpectralClusteringRecoversBlocks) {
  // Three blocks of a noisy doubly-stochastic-like affinity, shuffled.
  const at::Tensor truth = at::tensor(std::vector<int64_t>{2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2}, at::kLong);
  const at::Tensor same = truth.unsqueeze(1).eq(truth.unsqueeze(0)).to(at::kDouble);
  const at::Tensor affinity = same / 4 + 0.01 * normal({12, 12}, 8).abs();
  at::Generator generator = at::detail::createCPUGenerator(1);
  EXPECT_DOUBLE_EQ(clustering_accuracy(spectral_clustering(affinity, 3, generator), truth, 3), 1.0);
}

// Three 2-dimensional subspaces of R¹⁰, 20 unit points each.
std::pair<at::Tensor, at::Tensor> union_of_subspaces(uint64_t seed) {
  std::vector<at::Tensor> xs;
  std::vector<int64_t> labels;
  for (int64_t k = 0; k < 3; ++k) {
    const at::Tensor basis = std::get<0>(at::linalg_qr(normal({10, 2}, seed + 10 * k)));
    xs.push_back(unit_rows(at::matmul(normal({20, 2}, seed + 10 * k + 1), basis.t())));
    for (int i = 0; i < 20; ++i) labels.push_back(k);
  }
  return {at::cat(xs), at::tensor(labels, at::kLong)};
}

TEST(Mcr2Test, ClustersAUnionOfSubspaces) {
  SingleThreaded single_threaded;
  const auto [x, truth] = union_of_subspaces(100);
  Mcr2Options options;
  options.clusters = 3;
  options.feature_dim = 6;
  options.tcr_steps = 20;
  options.steps = 60;
  options.learning_rate = 0.02;
  at::Generator generator = at::detail::createCPUGenerator(0);
  const Mcr2Fit fit = mcr2_fit(x, options, generator);
  EXPECT_GE(clustering_accuracy(fit.labels, truth, 3), 0.95);
  EXPECT_GT(fit.rate_reduction.back(), fit.rate_reduction.front());
  // Nearest-subspace predictions on the training points agree with the fitted clusters.
  const at::Tensor again = nearest_subspace(mcr2_features(x, fit.feature_head), fit.bases);
  EXPECT_GE(again.eq(fit.labels).to(at::kDouble).mean().item<double>(), 0.95);
}

TEST(Mcr2Test, EstimatorRoundTripsAndRefusesBadOptions) {
  SingleThreaded single_threaded;
  const auto [x, truth] = union_of_subspaces(200);
  auto mcr2 =
      create_estimator("mcr2", {{"clusters", 3}, {"feature_dim", 6}, {"tcr_steps", 5}, {"steps", 10}}, 0);
  mcr2->fit(make_dataset(x, at::Tensor(), "subspaces"));
  testing::TempDir dir;
  mcr2->save(dir / "model");
  EXPECT_TRUE(at::equal(load_estimator(dir / "model")->predict(x), mcr2->predict(x)));
  kernel_testing::expect_error(
      [] {
        create_estimator("mcr2", {{"epsilon_sq", 0}}, 0);
      },
      "\"epsilon_sq\" must be > 0");
  kernel_testing::expect_error([] { create_estimator("mcr2", {{"eta", -1}}, 0); }, "\"eta\" must be > 0");
  kernel_testing::expect_error(
      [] {
        create_estimator("mcr2", {{"clusters", 2}, {"feature_dim", 4}, {"subspace_rank", 5}}, 0);
      },
      "\"subspace_rank\" must be in [0, feature_dim = 4]");
}

}  // namespace
}  // namespace lowrank::kernel_methods
