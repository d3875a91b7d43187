#include "lowrank/compress/svdquant.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/ops/group_quant.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kDouble);
}

// A layer with a few outlier input channels in both the weight and the activations (the setting
// SVDQuant targets): W [out, in] float32, X [in, tokens] float64.
struct OutlierLayer {
  at::Tensor W, X, H, x_absmax;
};

OutlierLayer outlier_layer(int64_t out, int64_t in, int64_t tokens, uint64_t seed) {
  OutlierLayer l;
  auto w_scale = at::ones({in}, at::kDouble);
  auto x_scale = at::ones({in}, at::kDouble);
  for (int64_t j : {3, 17, 40, 77}) {
    if (j >= in) continue;
    w_scale[j] = 8.0;
    x_scale[j] = 30.0;
  }
  l.W = (randn({out, in}, seed) * 0.02 * w_scale.unsqueeze(0)).to(at::kFloat);
  l.X = randn({in, tokens}, seed + 1) * x_scale.unsqueeze(1);
  l.H = at::matmul(l.X, l.X.mT());
  l.x_absmax = l.X.abs().amax(1);
  return l;
}

// ||(W − W_eff) X||_F² / ||W X||_F² with the explicit inputs: the Gram-free oracle.
double direct_output_error(const at::Tensor& W, const at::Tensor& W_eff, const at::Tensor& X) {
  const auto Wd = W.to(at::kDouble);
  return at::matmul(Wd - W_eff.to(at::kDouble), X).pow(2).sum().item<double>() /
         at::matmul(Wd, X).pow(2).sum().item<double>();
}

// (L1 L2 + dequant(R)) / λ, rebuilt from the result's stored tensors.
at::Tensor rebuild(const SvdQuantResult& r) {
  auto low_rank = at::matmul(r.lora_up.to(at::kDouble), r.lora_down.to(at::kDouble));
  return (low_rank + r.residual.dequantize(at::kDouble)) / r.smooth.to(at::kDouble).unsqueeze(0);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(SvdQuantTest, RelativeOutputErrorMatchesExplicitInputs) {
  const auto W = randn({12, 32}, 1);
  const auto W_eff = W + 0.05 * randn({12, 32}, 2);
  const auto X = randn({32, 50}, 3) * at::logspace(-1, 1, 32, 10.0, at::kDouble).unsqueeze(1);
  const double expected = direct_output_error(W, W_eff, X);
  EXPECT_NEAR(relative_output_error(W, W_eff, at::matmul(X, X.mT())), expected, 1e-12 * expected);
  EXPECT_EQ(relative_output_error(W, W, at::matmul(X, X.mT())), 0.0);
  EXPECT_EQ(relative_output_error(at::zeros({2, 3}), at::zeros({2, 3}), at::eye(3)), 0.0);
  EXPECT_TRUE(std::isinf(relative_output_error(at::zeros({2, 3}), at::ones({2, 3}), at::eye(3))));
  EXPECT_THROW(relative_output_error(W, W_eff.narrow(1, 0, 31), at::eye(32)), InvalidArgument);
  EXPECT_THROW(relative_output_error(W, W_eff, at::eye(31)), InvalidArgument);
}

TEST(SvdQuantTest, FullRankLeavesNoResidualError) {
  const OutlierLayer l = outlier_layer(16, 64, 80, 10);
  SvdQuantOptions o;
  o.rank = 16;
  o.grid = 4;
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
  EXPECT_EQ(r.lora_up.sizes(), (at::IntArrayRef{16, 16}));
  EXPECT_EQ(r.lora_down.sizes(), (at::IntArrayRef{16, 64}));
  EXPECT_EQ(r.lora_up.scalar_type(), at::kFloat);
  EXPECT_EQ(r.smooth.sizes(), (at::IntArrayRef{64}));
  // Only the float32 rounding of the factors is left for the residual to carry.
  EXPECT_LT(r.output_error, 1e-10);
  EXPECT_LT(r.residual.dequantize().abs().max().item<double>(), 1e-5 * l.W.abs().max().item<double>());
}

TEST(SvdQuantTest, BeatsRoundToNearestOnOutlierChannels) {
  const OutlierLayer l = outlier_layer(64, 128, 512, 20);
  const double rtn = relative_output_error(l.W, ops::fake_quantize_groups(l.W, 4, 64), l.H);
  // Rank 2 cannot take all four outlier channels into the branch: smoothing has to help too.
  for (int64_t rank : {2, 8}) {
    SvdQuantOptions o;
    o.rank = rank;
    const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
    std::printf(
        "RTN W4 g64 output error %.3e, SVDQuant r=%ld %.3e (alpha %.2f, beta %.2f, %d refit iterations)\n",
        rtn, static_cast<long>(rank), r.output_error, r.alpha, r.beta, r.iterations);
    EXPECT_LT(r.output_error, 0.5 * rtn) << "rank " << rank;
  }
}

TEST(SvdQuantTest, ReportedErrorIsTheErrorOfTheReturnedTensors) {
  const OutlierLayer l = outlier_layer(32, 128, 256, 30);
  SvdQuantOptions o;
  o.rank = 4;
  o.grid = 10;
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
  const auto W_eff = rebuild(r);
  EXPECT_NEAR(r.output_error, relative_output_error(l.W, W_eff, l.H), 1e-9 * r.output_error);
  EXPECT_NEAR(r.output_error, direct_output_error(l.W, W_eff, l.X), 1e-8 * r.output_error);
  EXPECT_LT(testing::max_abs_diff(r.effective_weight(at::kDouble), W_eff), 1e-12);
  // λ is the grid formula at the chosen (alpha, beta) (this layer has no zero spans).
  const auto wspan = l.W.to(at::kDouble).abs().amax(0);
  const auto expected = (l.x_absmax.pow(r.alpha) / wspan.pow(r.beta)).to(at::kFloat);
  EXPECT_TRUE(at::equal(r.smooth, expected));
  // The chosen candidate is on the grid.
  const double a = r.alpha * o.grid;
  EXPECT_NEAR(a, std::round(a), 1e-9);
  EXPECT_TRUE(r.beta == 0 || std::fabs(r.alpha + r.beta - 1) < 1e-12);
  // The residual is what is left of Ŵ after the branch, quantised.
  const auto W_hat = l.W.to(at::kDouble) * r.smooth.to(at::kDouble).unsqueeze(0);
  const auto rest = W_hat - at::matmul(r.lora_up.to(at::kDouble), r.lora_down.to(at::kDouble));
  if (r.iterations == 0) {
    EXPECT_TRUE(at::equal(r.residual.dequantize(), ops::fake_quantize_groups(rest.to(at::kFloat), 4, 64)));
  }
}

TEST(SvdQuantTest, RefitNeverIncreasesTheError) {
  for (uint64_t seed : {40, 41, 42}) {
    const OutlierLayer l = outlier_layer(48, 128, 200, seed);
    SvdQuantOptions o;
    o.rank = 6;
    o.grid = 5;
    o.max_iters = 0;
    const SvdQuantResult first = svdquant(l.W, l.H, l.x_absmax, o);
    EXPECT_EQ(first.iterations, 0);
    o.max_iters = 100;
    const SvdQuantResult refit = svdquant(l.W, l.H, l.x_absmax, o);
    EXPECT_EQ(refit.alpha, first.alpha);
    EXPECT_EQ(refit.beta, first.beta);
    EXPECT_LE(refit.output_error, first.output_error) << "seed " << seed;
    EXPECT_GE(refit.iterations, 0);
    EXPECT_LE(refit.iterations, 100);
    if (refit.iterations == 0) {
      EXPECT_EQ(refit.output_error, first.output_error);
    }
  }
}

TEST(SvdQuantTest, GridOfOneMeansNoSmoothing) {
  const OutlierLayer l = outlier_layer(16, 64, 64, 50);
  SvdQuantOptions o;
  o.rank = 2;
  o.grid = 1;
  const SvdQuantResult r = svdquant(l.W, l.H, l.x_absmax, o);
  EXPECT_TRUE(at::equal(r.smooth, at::ones({64}, at::kFloat)));
  EXPECT_EQ(r.alpha, 0);
  EXPECT_EQ(r.beta, 0);
}

TEST(SvdQuantTest, RejectsBadArguments) {
  const OutlierLayer l = outlier_layer(8, 64, 16, 60);
  auto with = [](auto edit) {
    SvdQuantOptions o;
    o.rank = 4;
    o.grid = 2;
    edit(o);
    return o;
  };
  auto msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.rank = 0; })); });
  EXPECT_TRUE(contains(msg, "rank = 0")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.rank = 9; })); });
  EXPECT_TRUE(contains(msg, "rank = 9")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.group_size = 48; })); });
  EXPECT_TRUE(contains(msg, "group_size = 48")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.bits = 2; })); });
  EXPECT_TRUE(contains(msg, "bits = 2")) << msg;
  EXPECT_THROW(svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.grid = 0; })), InvalidArgument);
  EXPECT_THROW(svdquant(l.W, l.H, l.x_absmax, with([](auto& o) { o.max_iters = -1; })), InvalidArgument);
  msg = testing::error_of([&] { svdquant(l.W, l.H.narrow(0, 0, 63), l.x_absmax, with([](auto&) {})); });
  EXPECT_TRUE(contains(msg, "H has shape")) << msg;
  msg = testing::error_of([&] { svdquant(l.W, l.H, l.x_absmax.narrow(0, 0, 60), with([](auto&) {})); });
  EXPECT_TRUE(contains(msg, "x_absmax has shape")) << msg;
  EXPECT_THROW(svdquant(l.W.flatten(), l.H, l.x_absmax, with([](auto&) {})), InvalidArgument);
  EXPECT_THROW(svdquant(l.W, l.H, -l.x_absmax, with([](auto&) {})), InvalidArgument);
  auto bad = l.W.clone();
  bad[0][0] = NAN;
  EXPECT_THROW(svdquant(bad, l.H, l.x_absmax, with([](auto&) {})), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::compress
