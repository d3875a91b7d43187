// Image degradations (data/image_degrade.h) against their definitions: the blur of a point is the
// normalised Gaussian; noise has the stated deviation and is seeded; a block whose DCT coefficients
// are multiples of the quantisation table passes JPEG unchanged and any block moves by at most half
// a step per coefficient; contrast keeps the mean and scales the deviation; outputs stay in [0, 1].
#include "lowrank/data/image_degrade.h"

#include <gtest/gtest.h>

#include <cmath>

#include "lowrank/core/error.h"

namespace lowrank::data {
namespace {

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(ImageDegradeTest, ParsesSpecsAndRefusesBadOnesNamingThem) {
  EXPECT_EQ(parse_degradation("blur:3").kind, Degradation::kBlur);
  EXPECT_EQ(parse_degradation("downsample:5").severity, 5);
  EXPECT_EQ(parse_degradation("clean").name(), "clean");
  EXPECT_EQ(parse_degradation("jpeg:2").name(), "jpeg:2");
  auto refused = [](const std::string& text, const std::string& needle) {
    try {
      parse_degradation(text);
      ADD_FAILURE() << text;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused("fog:2", "unknown kind \"fog\"");
  refused("blur", "give a severity");
  refused("blur:6", "severity must be an integer 1..5, got \"6\"");
  refused("noise:x", "got \"x\"");
}

TEST(ImageDegradeTest, BlurOfAPointIsTheNormalisedGaussian) {
  const double sigma = 1.5;  // blur:3
  at::Tensor x = at::zeros({1, 1, 21, 21}, at::kDouble);
  x[0][0][10][10] = 1.0;
  const at::Tensor y = degrade(x, parse_degradation("blur:3"))[0][0];
  const int radius = static_cast<int>(std::ceil(3 * sigma));
  double z = 0;
  for (int d = -radius; d <= radius; ++d) z += std::exp(-d * d / (2 * sigma * sigma));
  for (int dy : {0, 1, 3})
    for (int dx : {0, 2, 4}) {
      const double want = std::exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)) / (z * z);
      EXPECT_NEAR(y[10 + dy][10 + dx].item<double>(), want, 1e-12) << dy << "," << dx;
    }
}

TEST(ImageDegradeTest, NoiseHasItsDeviationAndIsSeeded) {
  const at::Tensor x = at::full({4, 1, 64, 64}, 0.5);
  const at::Tensor a = degrade(x, parse_degradation("noise:2"), 7);
  EXPECT_TRUE(at::equal(a, degrade(x, parse_degradation("noise:2"), 7)));
  EXPECT_FALSE(at::equal(a, degrade(x, parse_degradation("noise:2"), 8)));
  EXPECT_NEAR((a - x).std().item<double>(), 0.08, 0.004);
}

// The orthonormal DCT-II of size 8, written from its definition.
at::Tensor dct_matrix() {
  at::Tensor d = at::empty({8, 8}, at::kDouble);
  for (int k = 0; k < 8; ++k)
    for (int n = 0; n < 8; ++n)
      d[k][n] = (k == 0 ? std::sqrt(0.125) : 0.5) * std::cos(M_PI * (2 * n + 1) * k / 16.0);
  return d;
}

TEST(ImageDegradeTest, JpegKeepsRepresentableBlocksAndMovesOthersByHalfAStep) {
  at::manual_seed(4);  // the random inputs below are fixed
  // Quality 100 − 18·3 = 46: libjpeg scale 5000 / 46 = 108, Q = clamp((T·108 + 50) / 100, 1, 255).
  const int table[64] = {16, 11, 10, 16, 24,  40,  51,  61,  12, 12, 14, 19, 26,  58,  60,  55,
                         14, 13, 16, 24, 40,  57,  69,  56,  14, 17, 22, 29, 51,  87,  80,  62,
                         18, 22, 37, 56, 68,  109, 103, 77,  24, 35, 55, 64, 81,  104, 113, 92,
                         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99};
  at::Tensor q = at::empty({8, 8}, at::kDouble);
  for (int i = 0; i < 64; ++i) q[i / 8][i % 8] = std::clamp((table[i] * 108 + 50) / 100, 1, 255);
  const at::Tensor D = dct_matrix();
  // Coefficients m ⊙ Q with small integers m: a block JPEG must reproduce.
  at::Tensor m = at::zeros({8, 8}, at::kDouble);
  m[0][0] = 2;
  m[0][1] = -1;
  m[2][1] = 1;
  m[1][3] = -1;
  const at::Tensor block = (at::matmul(at::matmul(D.t(), m * q), D) + 128.0) / 255.0;
  ASSERT_TRUE(block.min().item<double>() >= 0 && block.max().item<double>() <= 1);
  const at::Tensor image = block.view({1, 1, 8, 8});
  EXPECT_LE(max_diff(degrade(image, parse_degradation("jpeg:3")), image), 1e-9);
  // A random 16x16 image: per block, the squared pixel error (×255²) is at most Σ (Q/2)² (Parseval).
  const at::Tensor x = at::rand({1, 1, 16, 16}, at::kDouble) * 0.6 + 0.2;
  const at::Tensor e = (degrade(x, parse_degradation("jpeg:3")) - x) * 255.0;
  const double bound = (q / 2).pow(2).sum().item<double>();
  for (int by = 0; by < 2; ++by)
    for (int bx = 0; bx < 2; ++bx)
      EXPECT_LE(e[0][0].narrow(0, by * 8, 8).narrow(1, bx * 8, 8).pow(2).sum().item<double>(), bound);
  EXPECT_GT(e.abs().max().item<double>(), 0.5);  // it does quantise
}

TEST(ImageDegradeTest, ContrastKeepsTheMeanAndEveryKindStaysInRange) {
  at::manual_seed(5);  // the random inputs below are fixed
  const at::Tensor x = at::rand({2, 1, 16, 16}, at::kDouble) * 0.5 + 0.25;
  const at::Tensor y = degrade(x, parse_degradation("contrast:2"));
  EXPECT_LE(max_diff(y.mean({2, 3}), x.mean({2, 3})), 1e-12);
  EXPECT_NEAR(
      (y - y.mean({2, 3}, true)).std().item<double>() / (x - x.mean({2, 3}, true)).std().item<double>(), 0.7,
      1e-9);
  EXPECT_LE(max_diff(degrade(x, parse_degradation("clean")), x), 0.0);
  const at::Tensor flat = at::full({1, 1, 16, 16}, 0.3, at::kDouble);
  EXPECT_LE(max_diff(degrade(flat, parse_degradation("downsample:3")), flat), 1e-12);
  EXPECT_LE(max_diff(degrade(x, parse_degradation("gamma:1")), x.pow(1.3)), 1e-12);
  for (const std::string& kind : degradation_kinds())
    for (int s : {1, 5}) {
      const at::Tensor out =
          degrade(at::rand({2, 1, 12, 12}), parse_degradation(kind + ":" + std::to_string(s)), 1);
      EXPECT_EQ(out.sizes(), (at::IntArrayRef{2, 1, 12, 12})) << kind;
      EXPECT_GE(out.min().item<double>(), 0.0) << kind;
      EXPECT_LE(out.max().item<double>(), 1.0) << kind;
    }
}

}  // namespace
}  // namespace lowrank::data
