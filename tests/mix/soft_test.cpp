// SOFT (mix/soft.h): the Newton–Raphson iterate equals at::linalg_pinv of the ridged landmark
// kernel; its hand-written backward equals finite differences (float64, a non-symmetric matrix so
// that the transposes count); Nyström is exact when the landmarks are all the tokens; the whole
// forward equals a float64 composition written out loop by loop (landmark conv, LayerNorm, GELU,
// Gaussian kernels, an exact inverse, the depthwise conv); a missing or indivisible grid and bad
// options are refused by name.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/mix/soft.h"
#include "tests/mix/mixer_test_util.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

using ::lowrank::testing::error_of;
using ::lowrank::testing::max_abs_diff;
using ::lowrank::testing::rel_max_error;

// exp(−½‖a_i − b_j‖²), one entry at a time.
at::Tensor gaussian_loop(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(0), b.size(0)}, at::kDouble);
  for (int64_t i = 0; i < a.size(0); ++i)
    for (int64_t j = 0; j < b.size(0); ++j)
      out[i][j] = std::exp(-0.5 * (a[i] - b[j]).pow(2).sum().item<double>());
  return out;
}

TEST(SoftTest, NewtonIterateMatchesPinvOfTheRidgedKernel) {
  at::manual_seed(3);
  const at::Tensor points = at::randn({2, 6, 3}, at::kDouble) * 1.2;
  const at::Tensor bm = at::stack({gaussian_loop(points[0], points[0]), gaussian_loop(points[1], points[1])});
  const at::Tensor ridged = bm + 0.01 * at::eye(6, at::kDouble);
  ASSERT_LT(at::linalg_cond(ridged).max().item<double>(), 100.0);  // well-conditioned
  const at::Tensor v = newton_inverse(bm, 20);
  EXPECT_LE(rel_max_error(v, at::linalg_pinv(ridged)), 1e-4);
  // The normalised variant's start (no ridge, α backed off) converges to Bm's own inverse.
  EXPECT_LE(rel_max_error(newton_inverse(bm, 20, 0.0, true), at::linalg_pinv(bm)), 1e-4);
}

TEST(SoftTest, HandWrittenBackwardMatchesFiniteDifferences) {
  at::manual_seed(4);
  const int64_t m = 4;
  // Non-symmetric, positive, diagonally dominant: converges, and Vᵀ differs from V.
  const at::Tensor bm =
      (2 * at::eye(m, at::kDouble) + 0.4 * at::rand({m, m}, at::kDouble)).requires_grad_(true);
  const at::Tensor weight = at::randn({m, m}, at::kDouble);
  const at::Tensor loss = (newton_inverse(bm, 20) * weight).sum();
  const at::Tensor grad = torch::autograd::grad({loss}, {bm})[0];
  const double h = 1e-6;
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      at::Tensor plus = bm.detach().clone(), minus = bm.detach().clone();
      plus[i][j] += h;
      minus[i][j] -= h;
      const double fd = ((newton_inverse(plus, 20) * weight).sum().item<double>() -
                         (newton_inverse(minus, 20) * weight).sum().item<double>()) /
                        (2 * h);
      EXPECT_NEAR(grad[i][j].item<double>(), fd, 1e-7) << "entry (" << i << ", " << j << ")";
    }
}

// Ŝ = A·Bm⁻¹·Aᵀ with landmarks = the tokens is S·S⁻¹·S = S. The mixer's landmarks pass through a
// LayerNorm and cannot equal Q, so the Nyström core is given Q as its landmarks, and no ridge
// (SOFT's 0.01 ridge would give S·(S + 0.01 I)⁻¹·S).
TEST(SoftTest, NystromIsExactWhenTheLandmarksAreAllTheTokens) {
  at::manual_seed(5);
  const at::Tensor q = at::randn({2, 7, 3}, at::kDouble);
  const at::Tensor v = at::randn({2, 7, 4}, at::kDouble);
  const at::Tensor y = soft_nystrom(q, q, v, 20, /*normalize=*/false, /*ridge=*/0.0);
  for (int64_t b = 0; b < 2; ++b)
    EXPECT_LE(max_abs_diff(y[b], at::matmul(gaussian_loop(q[b], q[b]), v[b])), 1e-9) << "row " << b;
}

// The mixer's forward, written out independently (float64 loops over heads, patches and pixels).
at::Tensor soft_reference(const nn::TokenMixer& mixer, const at::Tensor& x, int64_t gh, int64_t gw, int64_t s,
                          int64_t heads) {
  const auto slots = mixer.slots();
  std::map<std::string, at::Tensor> t;
  for (const auto& [n, v] : mixer.tensors()) t[n.substr(n.rfind(".mixer.") + 7)] = v.detach();
  const at::Tensor q_all = at::linear(x, slots[0]->base().dense_weight(), slots[0]->base().bias());
  const at::Tensor v_all = at::linear(x, slots[1]->base().dense_weight(), slots[1]->base().bias());
  const int64_t T = gh * gw, d = q_all.size(-1) / heads, mh = gh / s, mw = gw / s;
  const at::Tensor conv = t.at("landmark_conv.weight"), lw = t.at("landmark_norm.weight");
  const at::Tensor lb = t.at("landmark_norm.bias"), dw = t.at("v_conv.weight");
  at::Tensor out = at::zeros({T, heads * d}, at::kDouble);
  for (int64_t h = 0; h < heads; ++h) {
    const at::Tensor q = q_all.narrow(1, h * d, d) / std::pow(d, 0.25);  // [T, d]
    const at::Tensor v = v_all.narrow(1, h * d, d);
    at::Tensor land = at::zeros({mh * mw, d}, at::kDouble);
    for (int64_t a = 0; a < mh; ++a)
      for (int64_t b = 0; b < mw; ++b)
        for (int64_t di = 0; di < s; ++di)
          for (int64_t dj = 0; dj < s; ++dj)
            land[a * mw + b] += at::mv(conv.select(3, dj).select(2, di), q[(a * s + di) * gw + b * s + dj]);
    for (int64_t r = 0; r < land.size(0); ++r) {
      const at::Tensor row = land[r];
      const at::Tensor normed =
          (row - row.mean()) / std::sqrt(row.var(/*unbiased=*/false).item<double>() + 1e-5);
      const at::Tensor z = normed * lw + lb;
      land[r] = 0.5 * z * (1 + at::erf(z / std::sqrt(2.0)));
    }
    const at::Tensor a = gaussian_loop(q, land);
    const at::Tensor bm = gaussian_loop(land, land);
    const at::Tensor inv = at::linalg_inv(bm + 0.01 * at::eye(bm.size(0), at::kDouble));
    at::Tensor head = at::matmul(at::matmul(a, inv), at::matmul(a.t(), v));
    for (int64_t i = 0; i < gh; ++i)
      for (int64_t j = 0; j < gw; ++j)
        for (int64_t di = -1; di <= 1; ++di)
          for (int64_t dj = -1; dj <= 1; ++dj) {
            const int64_t ii = i + di, jj = j + dj;
            if (ii < 0 || jj < 0 || ii >= gh || jj >= gw) continue;
            head[i * gw + j] += dw[h][0][di + 1][dj + 1].item<double>() * v[ii * gw + jj];
          }
    out.narrow(1, h * d, d).copy_(head);
  }
  return at::linear(out, slots[2]->base().dense_weight(), slots[2]->base().bias());
}

TEST(SoftTest, ForwardEqualsAFloat64CompositionWrittenOut) {
  const int64_t heads = 2, H = 8, gh = 4, gw = 6, s = 2;
  const nn::ModelConfig config = testing::mixer_config("soft", H, heads, {{"sr_ratio", s}});
  const auto mixer = testing::build_mixer("soft", config);
  EXPECT_FALSE(mixer->causal());
  const at::Tensor x = at::randn({2, gh * gw, H}, at::kDouble);
  nn::MixerContext context;
  context.grid = nn::Grid2d{gh, gw};
  const at::Tensor y = mixer->forward(x, context);
  for (int64_t b = 0; b < 2; ++b)
    EXPECT_LE(rel_max_error(y[b], soft_reference(*mixer, x[b], gh, gw, s, heads)), 1e-9) << "row " << b;
}

TEST(SoftTest, NormalizedVariantScalesTheInverseByTheRowSums) {
  const int64_t heads = 2, H = 4, gh = 4, gw = 4;
  const nn::ModelConfig plain = testing::mixer_config("soft", H, heads, {{"use_conv", false}});
  const nn::ModelConfig norm =
      testing::mixer_config("soft", H, heads, {{"use_conv", false}, {"normalize", true}});
  const auto a = testing::build_mixer("soft", plain);
  const auto b = testing::build_mixer("soft", norm);
  EXPECT_EQ(a->tensors().size(), 3u);  // no v_conv without use_conv
  nn::MixerContext context;
  context.grid = nn::Grid2d{gh, gw};
  const at::Tensor x = at::randn({1, gh * gw, H}, at::kDouble);
  EXPECT_GT(max_abs_diff(a->forward(x, context), b->forward(x, context)), 1e-6);
  // D·Bm⁻¹·D through the core, against an exact inverse.
  const at::Tensor q = at::randn({5, 3}, at::kDouble), land = at::randn({3, 3}, at::kDouble);
  const at::Tensor v = at::randn({5, 2}, at::kDouble);
  const at::Tensor bm = gaussian_loop(land, land), A = gaussian_loop(q, land);
  const at::Tensor dsc = bm.sum(1).rsqrt();
  const at::Tensor inv = dsc.unsqueeze(1) * at::linalg_inv(bm) * dsc.unsqueeze(0);
  EXPECT_LE(
      max_abs_diff(soft_nystrom(q, land, v, 20, true), at::matmul(at::matmul(A, inv), at::matmul(A.t(), v))),
      1e-8);
}

TEST(SoftTest, GradientsReachEveryTensor) {
  const nn::ModelConfig config = testing::mixer_config("soft", 4, 2, {});
  const auto mixer = testing::build_mixer("soft", config);
  for (const auto& [n, t] : mixer->tensors()) t.requires_grad_(true);
  nn::MixerContext context;
  context.grid = nn::Grid2d{4, 4};
  mixer->forward(at::randn({2, 16, 4}, at::kDouble), context).pow(2).sum().backward();
  for (const auto& [n, t] : mixer->tensors()) {
    ASSERT_TRUE(t.grad().defined()) << n;
    EXPECT_GT(t.grad().abs().sum().item<double>(), 0.0) << n;
  }
}

TEST(SoftTest, MissingOrIndivisibleGridsAndBadOptionsAreRefused) {
  const auto mixer = testing::build_mixer("soft", testing::mixer_config("soft", 4, 2, {{"sr_ratio", 3}}));
  const at::Tensor x = at::randn({1, 24, 4}, at::kDouble);
  EXPECT_NE(error_of([&] { (void)mixer->forward(x, {}); }).find("needs the 2-D grid"), std::string::npos);
  nn::MixerContext context;
  context.grid = nn::Grid2d{4, 6};
  const std::string indivisible = error_of([&] { (void)mixer->forward(x, context); });
  EXPECT_NE(indivisible.find("grid 4x6 is not divisible by sr_ratio = 3"), std::string::npos) << indivisible;
  context.grid = nn::Grid2d{3, 6};
  EXPECT_NE(
      error_of([&] { (void)mixer->forward(x, context); }).find("grid 3x6 does not hold the 24 positions"),
      std::string::npos);

  auto error = [](const Json& options) {
    return error_of(
        [&] { (void)testing::build_mixer("soft", testing::mixer_config("soft", 4, 2, options)); });
  };
  EXPECT_NE(error({{"sr_ratio", 0}}).find("sr_ratio must be >= 1, got 0"), std::string::npos);
  EXPECT_NE(error({{"newton_iters", 0}}).find("newton_iters must be >= 1, got 0"), std::string::npos);
  EXPECT_NE(error({{"use_conv", 3}}).find("\"use_conv\" has the wrong type"), std::string::npos);
  const std::string unknown = error({{"ratio", 2}});
  EXPECT_NE(unknown.find("unknown option \"ratio\" (known: sr_ratio, use_conv, normalize, newton_iters)"),
            std::string::npos)
      << unknown;
}

}  // namespace
}  // namespace lowrank::mix
