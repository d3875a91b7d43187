// A-priori CP convolutions (nn/cp_conv.h) against at::conv2d with the reconstructed kernel, forward
// and gradients.
#include <gtest/gtest.h>

#include "lowrank/nn/cp_conv.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

TEST(CpConvTest, EqualsDenseConvWithTheReconstructedKernel) {
  for (auto [s, t, k, r] :
       std::vector<std::array<int64_t, 4>>{{3, 5, 3, 2}, {8, 4, 5, 8}, {1, 1, 1, 1}, {2, 6, 7, 3}}) {
    CpConv2d conv = CpConv2d::random(s, t, k, r, 11, true, at::kDouble);
    const at::Tensor x = at::randn({2, s, 9, 7}, at::kDouble);
    const at::Tensor dense = at::conv2d(x, conv.kernel(), conv.bias, 1, k / 2);
    EXPECT_LE(testing::max_abs_diff(conv.forward(x), dense), 1e-6) << s << " " << t << " " << k << " " << r;
  }
}

TEST(CpConvTest, GradientsMatchTheDenseConvs) {
  CpConv2d conv = CpConv2d::random(4, 3, 5, 3, 5, true, at::kDouble);
  for (at::Tensor* p : {&conv.a, &conv.b, &conv.c, &conv.d, &conv.bias}) p->requires_grad_(true);
  const at::Tensor x = at::randn({2, 4, 8, 8}, at::kDouble).requires_grad_(true);
  const at::Tensor g = at::randn({2, 3, 8, 8}, at::kDouble);
  // Ours: the four-conv path.
  (conv.forward(x) * g).sum().backward();
  std::vector<at::Tensor> ours = {x.grad().clone(),      conv.a.grad().clone(), conv.b.grad().clone(),
                                  conv.c.grad().clone(), conv.d.grad().clone(), conv.bias.grad().clone()};
  for (at::Tensor* p : {&conv.a, &conv.b, &conv.c, &conv.d, &conv.bias}) p->mutable_grad() = at::Tensor();
  x.mutable_grad() = at::Tensor();
  // The oracle: one dense conv with K = einsum(A, B, C, D), autograd through both.
  (at::conv2d(x, conv.kernel(), conv.bias, 1, 2) * g).sum().backward();
  const std::vector<at::Tensor> dense = {x.grad(),      conv.a.grad(), conv.b.grad(),
                                         conv.c.grad(), conv.d.grad(), conv.bias.grad()};
  const char* names[] = {"x", "A", "B", "C", "D", "bias"};
  for (size_t i = 0; i < ours.size(); ++i)
    EXPECT_LE(testing::max_abs_diff(ours[i], dense[i]), 1e-6) << names[i];
}

TEST(CpConvTest, InitScaleParametersAndErrors) {
  const CpConv2d conv = CpConv2d::random(32, 32, 3, 8, 1, true, at::kDouble);
  // Var K = 1 / (3 · S · k²), nn.Conv2d's default, within sampling error (9216 entries, correlated).
  const double var = conv.kernel().var().item<double>(), want = 1.0 / (3.0 * 32 * 9);
  EXPECT_GT(var, 0.5 * want);
  EXPECT_LT(var, 2.0 * want);
  EXPECT_EQ(conv.parameter_count(), 8 * (32 + 32 + 3 + 3) + 32);
  EXPECT_NE(testing::error_of([] { CpConv2d::random(4, 4, 4, 2, 1); }).find("kernel size 4 must be odd"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] { CpConv2d::random(4, 4, 3, 0, 1); }).find("rank 0"), std::string::npos);
  const CpConv2d small = CpConv2d::random(2, 2, 3, 1, 1);
  EXPECT_NE(testing::error_of([&] {
              small.forward(at::zeros({1, 3, 4, 4}));
            }).find("expects [N, 2, H, W]"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::nn
