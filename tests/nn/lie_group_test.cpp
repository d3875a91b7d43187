// GL⁺(2) and SL(2) (nn/lie_group.h): the polar chart against scipy.linalg.polar and its own
// round trips, and the Haar sampler's left invariance by a two-sample test away from its truncation.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/safetensors.h"
#include "lowrank/nn/lie_group.h"
#include "tests/stats_testing.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

using testing::ks_statistic;

TEST(LiePolarTest, LeftPolarFactorsMatchScipy) {
  const SafetensorsFile f = SafetensorsFile::open(testing::fixture("lie_group/polar.safetensors"));
  const at::Tensor g = f.load("g");
  const PolarFactors ours = left_polar(g);
  EXPECT_LE(testing::max_abs_diff(ours.p, f.load("p")), 1e-12);
  EXPECT_LE(testing::max_abs_diff(ours.r, f.load("r")), 1e-12);
  EXPECT_LE(testing::max_abs_diff(at::matmul(ours.p, ours.r), g), 1e-12);
}

TEST(LiePolarTest, ChartRoundTrips) {
  // g → ξ⁻¹(g) → g on Haar samples of GL⁺(2) reaching singular values e^±3 and scales e^±1.
  const at::Tensor g = sample_gl2_haar(500, 3.0, 1.0, 1);
  EXPECT_LE(testing::rel_max_error(lie_chart_inverse(lie_chart(g)), g), 1e-12);
  // X → ξ(X) → X for X = S + θJ, S symmetric, θ ∈ (−π, π): the chart is onto that set.
  at::manual_seed(2);
  const at::Tensor m = at::randn({500, 2, 2}, at::kDouble);
  at::Tensor x = 0.5 * (m + m.transpose(-1, -2));
  const at::Tensor theta = (at::rand({500}, at::kDouble) * 2 - 1) * (std::numbers::pi - 1e-3);
  x.select(-2, 1).select(-1, 0).add_(theta);
  x.select(-2, 0).select(-1, 1).sub_(theta);
  EXPECT_LE(testing::max_abs_diff(lie_chart(lie_chart_inverse(x)), x), 1e-12);
  // On SL(2) the symmetric part is traceless.
  const at::Tensor sl = lie_chart(sample_sl2_haar(100, 2.0, 3));
  EXPECT_LE(sl.diagonal(0, -2, -1).sum(-1).abs().max().item<double>(), 1e-12);
  EXPECT_NE(testing::error_of([] {
              left_polar(at::tensor({1.0, 0.0, 0.0, -1.0}, at::kDouble).view({2, 2}));
            }).find("positive determinant"),
            std::string::npos);
}

// The angle of R in g = P·R, in (−π, π].
at::Tensor rotation_angle(const at::Tensor& g) {
  const at::Tensor r = left_polar(g).r;
  return at::atan2(r.select(-2, 1).select(-1, 0), r.select(-2, 0).select(-1, 0));
}

TEST(LieHaarTest, LeftTranslatesPassATwoSampleTestAwayFromTheTruncation) {
  const double t_max = 3.0, inner = 2.0;  // h has t = 0.5: B(T) ⊇ h·B(inner) ⊇ ... up to inner
  const at::Tensor h = at::tensor({std::exp(0.5), 0.3, 0.0, std::exp(-0.5)}, at::kDouble).view({1, 2, 2});
  ASSERT_LT(sl2_kak_t(h).item<double>(), t_max - inner);
  const at::Tensor g = sample_sl2_haar(40000, t_max, 11);
  const at::Tensor hg = at::matmul(h, sample_sl2_haar(40000, t_max, 12));
  // Both restricted to t ≤ inner, which h·B(T) contains: both are then Haar on B(inner).
  const at::Tensor a = g.index({sl2_kak_t(g) <= inner}), b = hg.index({sl2_kak_t(hg) <= inner});
  const double n = static_cast<double>(a.size(0)), m = static_cast<double>(b.size(0));
  const double critical = 1.95 * std::sqrt((n + m) / (n * m));  // α = 0.001
  EXPECT_LT(ks_statistic(sl2_kak_t(a), sl2_kak_t(b)), critical);
  EXPECT_LT(ks_statistic(rotation_angle(a), rotation_angle(b)), critical);
  // The t law itself: ∝ sinh 2t, so P(t ≤ 1 | t ≤ 2) = (cosh 2 − 1) / (cosh 4 − 1).
  const double expected = (std::cosh(2.0) - 1) / (std::cosh(4.0) - 1);
  const double observed = (sl2_kak_t(a) <= 1.0).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(observed, expected, 4 * std::sqrt(expected * (1 - expected) / n));
  EXPECT_LE(testing::max_abs_diff(at::linalg_det(g), at::ones({40000}, at::kDouble)), 1e-10);
}

TEST(LieHaarTest, Gl2ScalesAndBadArguments) {
  const at::Tensor g = sample_gl2_haar(1000, 1.0, 0.5, 4);
  const at::Tensor log_det = at::log(at::linalg_det(g)) / 2;  // = s ~ U[−0.5, 0.5]
  EXPECT_LE(log_det.abs().max().item<double>(), 0.5 + 1e-12);
  EXPECT_GT(log_det.abs().max().item<double>(), 0.45);
  EXPECT_NE(testing::error_of([] { sample_sl2_haar(10, 0.0, 1); }).find("truncation T = 0"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] {
              lie_chart(at::zeros({3, 3}, at::kDouble));
            }).find("[..., 2, 2]"),
            std::string::npos);
}

TEST(LiftingConvTest, EquivariantUnderTheGridsRotation) {
  // u: torch.rot90(f, 1) on a square image is (u·f)(p) = f(u⁻¹p) with u⁻¹(x, y) = (−y, x) in
  // (column, row) coordinates, i.e. u = [[0, 1], [−1, 0]]. Claim: L(u·f)(p, g) = (L f)(u⁻¹p, u⁻¹g),
  // that is, L(rot90 f) at g equals rot90 of L f at u⁻¹g.
  const LiftingConv2d conv = LiftingConv2d::random(3, 4, 5, 16, 21, at::kDouble);
  const at::Tensor g = sample_gl2_haar(6, 1.0, 0.3, 22);
  const at::Tensor u_inv = at::tensor({0.0, -1.0, 1.0, 0.0}, at::kDouble).view({1, 2, 2});
  at::manual_seed(23);
  const at::Tensor f = at::randn({2, 3, 11, 11}, at::kDouble);
  const at::Tensor lhs = conv.forward(at::rot90(f, 1, {2, 3}), g);
  const at::Tensor rhs = at::rot90(conv.forward(f, at::matmul(u_inv, g)), 1, {3, 4});
  EXPECT_EQ(lhs.sizes(), (std::vector<int64_t>{2, 4, 6, 11, 11}));
  EXPECT_LE(testing::max_abs_diff(lhs, rhs), 1e-10);
  // And the same group elements on both sides do not give it: the test can tell.
  EXPECT_GT(testing::max_abs_diff(lhs, at::rot90(conv.forward(f, g), 1, {3, 4})), 1e-3);
}

TEST(LiftingConvTest, KernelsAreTheMlpAtTransformedOffsets) {
  const LiftingConv2d conv = LiftingConv2d::random(2, 3, 3, 8, 5, at::kDouble);
  const at::Tensor g = at::tensor({2.0, 0.5, 0.0, 1.0}, at::kDouble).view({1, 2, 2});  // det 2
  const at::Tensor w = conv.kernels(g);                                                // [1, 3, 2, 3, 3]
  // Window entry (row 0, column 2) is δ = (1, −1); g⁻¹δ = (0.75, −1).
  const at::Tensor expected = conv.kernel.forward(at::tensor({0.75, -1.0}, at::kDouble)).view({3, 2}) / 2.0;
  EXPECT_LE(testing::max_abs_diff(w.select(0, 0).select(2, 0).select(2, 2), expected), 1e-12);
  EXPECT_NE(testing::error_of([] { LiftingConv2d::random(2, 3, 4, 8, 5); }).find("kernel size 4"),
            std::string::npos);
}

// f(p, g) = x(p) · φ(g) on the elements g [M, 2, 2], for x [B, C, H, W]: [B, C, M, H, W], with a
// smooth φ(g) = exp(−‖ξ⁻¹(g)‖²/8) (1 + ½ ξ⁻¹(g)₀₁).
at::Tensor separable_field(const at::Tensor& x, const at::Tensor& g) {
  const at::Tensor chart = lie_chart(g);
  const at::Tensor phi =
      at::exp(-chart.pow(2).sum({-2, -1}) / 8) * (1 + 0.5 * chart.select(-2, 0).select(-1, 1));
  return x.unsqueeze(2) * phi.view({1, 1, -1, 1, 1});
}

TEST(GroupConvTest, EquivarianceErrorFallsAsTheInverseSquareRootOfTheSamples) {
  // u = the grid's 90° rotation (exact on pixels, and the truncated Haar law is invariant under
  // rotations, so only the Monte-Carlo integral over G breaks equivariance):
  //   K(u·f)(p, h) = (K f)(u⁻¹p, u⁻¹h), (u·f)(p, g) = f(u⁻¹p, u⁻¹g).
  // A smooth kernel (ω₀ = 1): the Monte-Carlo error's constant grows with the kernel's frequency
  // over the group, and ω₀ = 10 (the default) needs far more than 1024 samples for a small error.
  GroupConv2d conv = GroupConv2d::random(2, 2, 3, 16, 31, at::kDouble);
  conv.kernel.w0 = 1.0;
  const at::Tensor u_inv = at::tensor({0.0, -1.0, 1.0, 0.0}, at::kDouble).view({1, 2, 2});
  const at::Tensor h = sample_gl2_haar(3, 1.0, 0.2, 32);
  at::manual_seed(33);
  const at::Tensor x = at::randn({1, 2, 9, 9}, at::kDouble);
  std::vector<double> sizes, errors;
  for (int64_t m : {16, 64, 256, 1024}) {
    double sum = 0;
    for (uint64_t seed = 0; seed < 6; ++seed) {
      const at::Tensor g = sample_gl2_haar(m, 1.5, 0.5, 100 + seed);
      const at::Tensor lhs =
          conv.forward(separable_field(at::rot90(x, 1, {2, 3}), at::matmul(u_inv, g)), g, h);
      const at::Tensor rhs =
          at::rot90(conv.forward(separable_field(x, g), g, at::matmul(u_inv, h)), 1, {3, 4});
      sum += ((lhs - rhs).norm() / rhs.norm()).item<double>();
    }
    sizes.push_back(std::log(static_cast<double>(m)));
    errors.push_back(std::log(sum / 6));
  }
  // Least-squares slope of log error on log M: −½ for a Monte-Carlo error.
  double mx = 0, my = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    mx += sizes[i] / sizes.size();
    my += errors[i] / errors.size();
  }
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    sxy += (sizes[i] - mx) * (errors[i] - my);
    sxx += (sizes[i] - mx) * (sizes[i] - mx);
  }
  const double slope = sxy / sxx;
  EXPECT_GT(slope, -0.7) << slope;
  EXPECT_LT(slope, -0.3) << slope;
  EXPECT_LT(std::exp(errors.back()), 0.1) << std::exp(errors.back());  // small at 1024 samples
}

TEST(GroupConvTest, OneSampleIsTheKernelAtTheChartOfTheRelativeElement) {
  const GroupConv2d conv = GroupConv2d::random(1, 1, 3, 8, 41, at::kDouble);
  const at::Tensor g = at::tensor({1.2, 0.3, -0.1, 0.9}, at::kDouble).view({1, 2, 2});
  const at::Tensor h = at::eye(2, at::kDouble).view({1, 2, 2});
  // A delta image at the centre: the output at the centre is the kernel at δ = 0 and ξ⁻¹(g).
  at::Tensor x = at::zeros({1, 1, 1, 5, 5}, at::kDouble);
  x[0][0][0][2][2] = 1.0;
  const at::Tensor y = conv.forward(x, g, h);
  const at::Tensor chart = lie_chart(g).reshape({4});
  const at::Tensor expected = conv.kernel.forward(at::cat({at::zeros({2}, at::kDouble), chart}));
  EXPECT_NEAR(y[0][0][0][2][2].item<double>(), expected.item<double>(), 1e-12);
  EXPECT_NE(testing::error_of([&] {
              conv.forward(at::zeros({1, 1, 2, 5, 5}, at::kDouble), g, h);
            }).find("for 1 input elements"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::nn
