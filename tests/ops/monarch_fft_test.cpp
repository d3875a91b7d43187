// ops/monarch_fft and ops/long_fft_conv: the Monarch FFT against at::fft_fft (float32, 1e-5 of the
// spectrum's scale) for powers of two and composite N, real and complex inputs, padding and
// truncation; its inverse against at::fft_ifft; an unsupported N refused naming N; the FFT
// convolution against the direct causal convolution (float64), which is itself checked against a
// scalar loop; the Monarch convolution against the FFT one; the learned factors at the DFT equal
// the fixed transform and receive gradients; the FFT convolution of S4/S4D's shapes against at::conv1d
// in float64 and float32.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>

#include "lowrank/core/error.h"
#include "lowrank/ops/long_fft_conv.h"
#include "lowrank/ops/monarch_fft.h"

namespace lowrank::ops {
namespace {

double max_abs(const at::Tensor& t) {
  return t.abs().max().item<double>();
}

// max |a − b| relative to max |b|.
double relative_error(const at::Tensor& a, const at::Tensor& b) {
  return max_abs(a - b) / max_abs(b);
}

TEST(MonarchFftTest, SplitIsBalancedAndRefusesUnsupportedLengthsNamingN) {
  EXPECT_EQ(monarch_split(16), (std::pair<int64_t, int64_t>{4, 4}));
  EXPECT_EQ(monarch_split(32), (std::pair<int64_t, int64_t>{4, 8}));
  EXPECT_EQ(monarch_split(42), (std::pair<int64_t, int64_t>{6, 7}));
  EXPECT_EQ(monarch_split(int64_t{1} << 24), (std::pair<int64_t, int64_t>{4096, 4096}));
  for (const int64_t bad : {int64_t{257}, int64_t{13}, int64_t{2}, int64_t{2 * 4099}, int64_t{1} << 25}) {
    try {
      (void)monarch_split(bad);
      FAIL() << "N = " << bad << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("N = " + std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_FALSE(monarch_supported(bad));
  }
  EXPECT_THROW((void)monarch_fft(at::randn({3, 257}), 257), InvalidArgument);
}

TEST(MonarchFftTest, EqualsAtFftForPowersOfTwoAndCompositeLengths) {
  at::manual_seed(1);
  for (const int64_t n : {4, 16, 64, 256, 1024, 2048, 12, 26, 42, 100, 105, 360}) {
    const at::Tensor real = at::randn({3, 2, n});
    EXPECT_LE(relative_error(monarch_fft(real, n), at::fft_fft(real, n)), 1e-5) << "real, N = " << n;
    const at::Tensor complex = at::complex(at::randn({2, n}), at::randn({2, n}));
    EXPECT_LE(relative_error(monarch_fft(complex, n), at::fft_fft(complex, n)), 1e-5) << "complex, N = " << n;
    EXPECT_LE(relative_error(monarch_ifft(complex, n), at::fft_ifft(complex, n)), 1e-5)
        << "inverse, N = " << n;
  }
  // Padding and truncation as at::fft_fft(x, N); float64 to 1e-12.
  const at::Tensor x = at::randn({2, 20}, at::kDouble);
  for (const int64_t n : {32, 12})
    EXPECT_LE(relative_error(monarch_fft(x, n), at::fft_fft(x, n)), 1e-12) << "N = " << n;
}

TEST(MonarchFftTest, DirectConvolutionIsTheCausalSumOfItsDefinition) {
  at::manual_seed(2);
  const at::Tensor u = at::randn({2, 3, 7}, at::kDouble), k = at::randn({3, 4}, at::kDouble);
  const at::Tensor y = direct_causal_conv(u, k);
  const auto ua = u.accessor<double, 3>();
  const auto ka = k.accessor<double, 2>();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t t = 0; t < 7; ++t) {
        double want = 0;
        for (int64_t s = 0; s <= t; ++s)
          if (t - s < 4) want += ka[h][t - s] * ua[b][h][s];
        EXPECT_NEAR(y[b][h][t].item<double>(), want, 1e-12) << b << "," << h << "," << t;
      }
}

TEST(MonarchFftTest, FftConvEqualsDirectConvAndMonarchConvEqualsFftConv) {
  at::manual_seed(3);
  // Kernel shorter than, equal to and longer than the input; channels broadcast [C, H, L'].
  for (const int64_t kernel_length : {5, 24, 40}) {
    const at::Tensor u = at::randn({2, 3, 24}, at::kDouble), k = at::randn({3, kernel_length}, at::kDouble);
    const at::Tensor direct = direct_causal_conv(u, k);
    EXPECT_LE(max_abs(fft_conv(u, k, FftConvImpl::kFft) - direct), 1e-10) << "L' = " << kernel_length;
    EXPECT_LE(max_abs(fft_conv(u, k, FftConvImpl::kMonarch) - direct), 1e-10) << "L' = " << kernel_length;
    const at::Tensor u32 = u.to(at::kFloat), k32 = k.to(at::kFloat);
    EXPECT_LE(
        relative_error(fft_conv(u32, k32, FftConvImpl::kMonarch), fft_conv(u32, k32, FftConvImpl::kFft)),
        1e-5);
  }
  const at::Tensor u = at::randn({2, 1, 3, 16}, at::kDouble), k = at::randn({2, 3, 16}, at::kDouble);
  EXPECT_LE(max_abs(fft_conv(u, k) - direct_causal_conv(u, k)), 1e-10);
  EXPECT_EQ(fft_conv(u, k).sizes(), (std::vector<int64_t>{2, 2, 3, 16}));
  EXPECT_EQ(fft_conv_size(24, 24, FftConvImpl::kFft), 48);
  EXPECT_EQ(fft_conv_size(24, 24, FftConvImpl::kMonarch), 64);
  EXPECT_THROW((void)parse_fft_conv_impl("cufft", "impl"), InvalidArgument);
}

// The convolution S4/S4D run ([B, H, L] by [H, L], the kernel as long as the input, down to one
// position) against at::conv1d, an independent causal convolution: the flipped kernel over the input
// padded on the left, one group per channel. float32 stays float32.
TEST(MonarchFftTest, FftConvEqualsConv1dAndKeepsFloat32) {
  at::manual_seed(5);
  const int64_t B = 2, H = 3;
  for (const int64_t L : {int64_t{1}, int64_t{9}, int64_t{16}}) {
    const at::Tensor u = at::randn({B, H, L}, at::kDouble), k = at::randn({H, L}, at::kDouble);
    const at::Tensor conv1d =
        at::conv1d(at::constant_pad_nd(u, {L - 1, 0}), k.flip(-1).unsqueeze(1), at::Tensor(),
                   at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, H);
    EXPECT_LE(max_abs(fft_conv(u, k) - conv1d), 1e-12) << "L = " << L;
    const at::Tensor y32 = fft_conv(u.to(at::kFloat), k.to(at::kFloat));
    EXPECT_EQ(y32.scalar_type(), at::kFloat);
    EXPECT_LE(max_abs(y32.to(at::kDouble) - conv1d), 1e-4) << "L = " << L;
  }
}

TEST(MonarchFftTest, LearnedFactorsAtTheDftGiveTheConvolutionAndTakeGradients) {
  at::manual_seed(4);
  const at::Tensor u = at::randn({2, 3, 10}), k = at::randn({3, 10});
  MonarchFactors fu = MonarchFactors::dft(32, at::kComplexFloat);
  MonarchFactors fk = MonarchFactors::dft(32, at::kComplexFloat);
  fu.f1.requires_grad_(true);
  fk.f2.requires_grad_(true);
  const at::Tensor y = monarch_conv(u, k, fu, fk);
  EXPECT_LE(relative_error(y, direct_causal_conv(u, k)), 1e-5);
  y.square().sum().backward();
  ASSERT_TRUE(fu.f1.grad().defined());
  EXPECT_GT(max_abs(fu.f1.grad()), 0.0);
  EXPECT_GT(max_abs(fk.f2.grad()), 0.0);
  EXPECT_THROW((void)monarch_conv(u, k, MonarchFactors::dft(16, at::kComplexFloat),
                                  MonarchFactors::dft(16, at::kComplexFloat)),
               InvalidArgument);
}

}  // namespace
}  // namespace lowrank::ops
