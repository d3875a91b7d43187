// Inception depthwise conv (mix/inception_dw.h): the split g = ⌊C/8⌋ and each branch against a
// direct float64 loop over the taps (zero padding), the identity channels untouched.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/mix/inception_dw.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

using ::lowrank::testing::error_of;
using ::lowrank::testing::max_abs_diff;

// Depthwise correlation with a kh×kw kernel, "same" zero padding, written out tap by tap.
at::Tensor direct_depthwise(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t kh = w.size(2), kw = w.size(3);
  at::Tensor y = at::zeros_like(x);
  auto xa = x.accessor<double, 4>();
  auto wa = w.accessor<double, 4>();
  auto ya = y.accessor<double, 4>();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          double s = b[c].item<double>();
          for (int64_t u = 0; u < kh; ++u)
            for (int64_t v = 0; v < kw; ++v) {
              const int64_t ii = i + u - kh / 2, jj = j + v - kw / 2;
              if (ii >= 0 && ii < H && jj >= 0 && jj < W) s += wa[c][0][u][v] * xa[n][c][ii][jj];
            }
          ya[n][c][i][j] = s;
        }
  return y;
}

nn::ConvTensorSource random_source() {
  auto gen = std::make_shared<at::Generator>(at::detail::createCPUGenerator(11));
  return [gen](const std::string&, std::vector<int64_t> shape, nn::ParamInit, const at::Tensor&) {
    return at::empty(shape, at::kDouble).normal_(0.0, 0.5, *gen);
  };
}

TEST(InceptionDWTest, BranchChannelsAreAnEighthRoundedDown) {
  for (const auto& [C, g] :
       std::vector<std::pair<int64_t, int64_t>>{{7, 0}, {8, 1}, {15, 1}, {16, 2}, {23, 2}, {96, 12}})
    EXPECT_EQ(inception_branch_channels(C, 0.125), g) << C;
}

TEST(InceptionDWTest, SplitsIntoIdentitySquareAndBandBranches) {
  const int64_t C = 20;  // g = 2: identity channels 0..13, 3x3 on 14..15, 1x11 on 16..17, 11x1 on 18..19
  const InceptionDW m = InceptionDW::make("m", C, {}, random_source());
  ASSERT_EQ(m.branch, 2);
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, C, 6, 13}, at::kDouble);
  const at::Tensor y = m.forward(x);
  ASSERT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(at::equal(y.narrow(1, 0, 14), x.narrow(1, 0, 14)));
  EXPECT_LE(max_abs_diff(y.narrow(1, 14, 2), direct_depthwise(x.narrow(1, 14, 2), m.hw_weight, m.hw_bias)),
            1e-12);
  EXPECT_LE(max_abs_diff(y.narrow(1, 16, 2), direct_depthwise(x.narrow(1, 16, 2), m.w_weight, m.w_bias)),
            1e-12);
  EXPECT_LE(max_abs_diff(y.narrow(1, 18, 2), direct_depthwise(x.narrow(1, 18, 2), m.h_weight, m.h_bias)),
            1e-12);
  EXPECT_EQ(m.w_weight.sizes(), at::IntArrayRef({2, 1, 1, 11}));
  EXPECT_EQ(m.h_weight.sizes(), at::IntArrayRef({2, 1, 11, 1}));
}

TEST(InceptionDWTest, RejectsEvenKernels) {
  InceptionDWOptions o;
  o.band_kernel_size = 10;
  const std::string e = error_of([&] { (void)InceptionDW::make("m", 16, o, random_source()); });
  EXPECT_NE(e.find("band_kernel_size"), std::string::npos) << e;
  EXPECT_NE(e.find("10"), std::string::npos) << e;
}

}  // namespace
}  // namespace lowrank::mix
