// The linalg/ pieces the kernel family shares (random_features, fwht, sinkhorn, kmeans), each
// against an independent computation: a dense Hadamard matrix, the plain-domain Sinkhorn iteration
// and POT's ot.sinkhorn (fixture), brute-force Lloyd fixed-point conditions, closed-form kernels for the
// random-feature means.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <numbers>

#include "lowrank/linalg/fwht.h"
#include "lowrank/linalg/kmeans.h"
#include "lowrank/linalg/random_features.h"
#include "lowrank/linalg/sinkhorn.h"
#include "tests/kernel_methods/kernel_testing.h"

namespace lowrank::linalg {
namespace {

using kernel_methods::kernel_testing::normal;

TEST(FwhtTest, MatchesTheDenseSylvesterHadamardMatrix) {
  const at::Tensor h2 = at::tensor({1.0, 1.0, 1.0, -1.0}, at::kDouble).reshape({2, 2});
  at::Tensor h = at::ones({1, 1}, at::kDouble);
  for (int i = 0; i < 4; ++i) h = at::kron(h, h2);  // H_16
  const at::Tensor x = normal({3, 16}, 1);
  EXPECT_LE(testing::max_abs_diff(fwht(x), at::matmul(x, h.t())), 1e-12);
  // Complex rows and a leading batch shape.
  const at::Tensor z = at::complex(normal({2, 2, 16}, 2), normal({2, 2, 16}, 3));
  const at::Tensor dense = at::matmul(z, h.t().to(at::kComplexDouble));
  EXPECT_LE((fwht(z) - dense).abs().max().item<double>(), 1e-12);
  EXPECT_THROW(fwht(normal({3, 12}, 4)), InvalidArgument);
}

TEST(RandomFeaturesTest, ReluFeaturesEstimateHalfTheArcCosineKernelAtRateOneOverRootM) {
  const at::Tensor x = normal({4, 5}, 5), y = normal({3, 5}, 6);
  // E[ReLU(gᵀx) ReLU(gᵀy)] = ‖x‖‖y‖(sin θ + (π − θ) cos θ)/(2π), written out entry by entry.
  at::Tensor exact = at::empty({4, 3}, at::kDouble);
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      const double nx = x[i].norm().item<double>(), ny = y[j].norm().item<double>();
      const double c = std::clamp(x[i].dot(y[j]).item<double>() / (nx * ny), -1.0, 1.0);
      const double t = std::acos(c);
      exact[i][j] = nx * ny * (std::sin(t) + (std::numbers::pi - t) * c) / (2 * std::numbers::pi);
    }
  }
  double previous = 0;
  for (int64_t m : {256, 65536}) {
    const at::Tensor g = normal({m, 5}, 7);
    const at::Tensor estimate = at::matmul(relu_features(x, g), relu_features(y, g).t());
    const double error = testing::rel_fro_error(estimate, exact);
    if (previous > 0) {
      // 256× the features: the error falls ~16×; allow a factor 2 for the seed.
      EXPECT_LT(error, previous / 8) << "m = " << m;
    }
    EXPECT_LT(error, 4.0 / std::sqrt(static_cast<double>(m)));
    previous = error;
  }
}

TEST(RandomFeaturesTest, FourierFeaturesEstimateTheRbfKernel) {
  const double sigma = 1.5;
  const at::Tensor x = normal({4, 3}, 8), y = normal({5, 3}, 9);
  const int64_t m = 200000;
  at::Generator gen = at::detail::createCPUGenerator(10);
  const at::Tensor w = at::empty({m, 3}, at::kDouble).normal_(0, 1 / sigma, gen);
  const at::Tensor b = at::empty({m}, at::kDouble).uniform_(0, 2 * std::numbers::pi, gen);
  const at::Tensor estimate = at::matmul(fourier_features(x, w, b), fourier_features(y, w, b).t());
  const at::Tensor d2 = (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1);
  const at::Tensor exact = at::exp(-d2 / (2 * sigma * sigma));
  // Each entry is a mean of m bounded terms (|2cos·cos| ≤ 2): standard error ≤ √2/√m ≈ 0.0032.
  EXPECT_LT(testing::max_abs_diff(estimate, exact), 4 * std::sqrt(2.0 / m));
}

TEST(RandomFeaturesTest, UniversalFeaturesAverageToTheComplexExponential) {
  // E_g[φ_j(x) φ_j(w)]·m = e^{iξ xᵀw} for every frequency ξ: checked over many g at one ξ.
  const at::Tensor x = normal({1, 3}, 11) / 2, w = normal({1, 3}, 12) / 2;
  const int64_t m = 100000;
  const double xi = 0.7;
  const at::Tensor g = normal({m, 3}, 13);
  const at::Tensor frequencies = at::full({m}, xi, at::kDouble);
  const at::Tensor product = universal_features(x, g, frequencies) * universal_features(w, g, frequencies);
  const c10::complex<double> sum = product.sum().item<c10::complex<double>>();
  const std::complex<double> mean(sum.real(), sum.imag());
  const double phase = xi * (x * w).sum().item<double>();
  const at::Tensor samples = product.reshape({-1}) * static_cast<double>(m);
  const double se = std::sqrt(samples.abs().pow(2).mean().item<double>() / static_cast<double>(m));
  EXPECT_LT(std::abs(mean - std::polar(1.0, phase)), 4 * se) << "standard error " << se;
}

TEST(SinkhornTest, LogDomainMatchesThePlainIterationAndKeepsSmallEpsilonFinite) {
  const at::Tensor cost = normal({5, 4}, 14).abs();
  const at::Tensor a = at::softmax(normal({5}, 15), 0), b = at::softmax(normal({4}, 16), 0);
  const double eta = 0.5;
  SinkhornResult result = sinkhorn_log(cost, a, b, {eta, 5000, 1e-14});
  // The plain iteration u = a/(Kv), v = b/(Kᵀu) with K = e^{−C/η}, run independently here.
  const at::Tensor k = at::exp(-cost / eta);
  at::Tensor u = at::ones({5}, at::kDouble), v = at::ones({4}, at::kDouble);
  for (int i = 0; i < 5000; ++i) {
    u = a / at::matmul(k, v);
    v = b / at::matmul(k.t(), u);
  }
  const at::Tensor plain = u.unsqueeze(1) * k * v.unsqueeze(0);
  EXPECT_LE(testing::max_abs_diff(result.plan, plain), 1e-12);
  // A constant added to the cost leaves the plan unchanged (the potentials absorb it), but makes
  // e^{−C/η} = e^{−2000...} underflow to 0 everywhere: the plain iteration would divide 0 by 0.
  ASSERT_EQ(at::exp(-(cost + 1000) / eta).max().item<double>(), 0.0);
  result = sinkhorn_log(cost + 1000, a, b, {eta, 5000, 1e-14});
  EXPECT_LE(testing::max_abs_diff(result.plan, plain), 1e-12);
  EXPECT_THROW(sinkhorn_log(cost, a, b, {0.0}), InvalidArgument);
}

// POT's ot.sinkhorn (Cuturi's scaling iteration in the plain domain, run to convergence) on the same
// cost and marginals (fixture: tests/fixtures/kernels/make_fx.py): the same entropic plan.
TEST(SinkhornTest, MatchesPotSinkhorn) {
  const SafetensorsFile f = kernel_methods::kernel_testing::fixture("sinkhorn.safetensors");
  const SinkhornResult result = sinkhorn_log(f.load("cost"), f.load("a"), f.load("b"), {0.4, 2000, 1e-15});
  EXPECT_LE(testing::max_abs_diff(result.plan, f.load("plan")), 1e-12);
}

TEST(KMeansTest, EndsAtALloydFixedPointAndFindsSeparatedClusters) {
  at::Tensor offsets = at::tensor({0.0, 0.0, 10.0, 0.0, 0.0, 10.0}, at::kDouble).reshape({3, 2});
  const at::Tensor x = normal({60, 2}, 17) * 0.3 + offsets.repeat({20, 1});
  at::Generator gen = at::detail::createCPUGenerator(18);
  const KMeansResult result = kmeans(x, 3, gen);
  // Fixed point, checked by brute force: every point is assigned to its nearest centre, and every
  // centre is the mean of its points.
  for (int64_t i = 0; i < x.size(0); ++i) {
    const at::Tensor d = (result.centers - x[i]).pow(2).sum(1);
    EXPECT_EQ(result.assignments[i].item<int64_t>(), d.argmin().item<int64_t>()) << "point " << i;
  }
  double inertia = 0;
  for (int64_t j = 0; j < 3; ++j) {
    const at::Tensor members = x.index({result.assignments.eq(j)});
    ASSERT_GT(members.size(0), 0);
    EXPECT_LE(testing::max_abs_diff(result.centers[j], members.mean(0)), 1e-12);
    inertia += (members - members.mean(0)).pow(2).sum().item<double>();
  }
  EXPECT_NEAR(result.inertia, inertia, 1e-9);
  // The three blobs are found: each holds exactly the 20 points generated around one offset.
  for (int64_t j = 0; j < 3; ++j) {
    const at::Tensor of_blob = result.assignments.index({at::arange(j, 60, 3)});
    EXPECT_TRUE(of_blob.eq(of_blob[0]).all().item<bool>()) << "blob " << j;
  }
  EXPECT_THROW(kmeans(x, 61, gen), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::linalg
