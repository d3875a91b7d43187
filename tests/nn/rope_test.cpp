// nn/rope: inv_freq of every RoPE variant against its closed form evaluated in double precision
// here (RoFormer; linear interpolation; dynamic NTK; YaRN Eqs. 17-22 as transformers writes them;
// Llama 3.1's smooth band), the yarn attention factor, and the rotation itself.
#include "lowrank/nn/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "tests/testing.h"

namespace lowrank::nn {
namespace {

constexpr double kPi = std::numbers::pi;

std::vector<double> closed_default(double theta, int64_t d) {
  std::vector<double> out;
  for (int64_t i = 0; i < d / 2; ++i) out.push_back(std::pow(theta, -2.0 * i / d));
  return out;
}

void expect_close(const at::Tensor& got, const std::vector<double>& want) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  ASSERT_EQ(got.scalar_type(), at::kFloat);
  const at::Tensor g = got.to(at::kDouble);
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(g[i].item<double>(), want[i], 2e-6 * std::abs(want[i])) << "i = " << i;
}

TEST(RopeTest, DefaultAndLinear) {
  RopeConfig r;
  r.theta = 10000.0;
  expect_close(rope_frequencies(r, 16, 256).inv_freq, closed_default(10000.0, 16));
  r.type = "linear";
  r.factor = 4.0;
  std::vector<double> want = closed_default(10000.0, 16);
  for (double& w : want) w /= 4.0;
  RopeFrequencies f = rope_frequencies(r, 16, 256);
  expect_close(f.inv_freq, want);
  EXPECT_EQ(f.attention_scaling, 1.0);
}

TEST(RopeTest, DynamicNtkChangesTheBaseBeyondTheTrainedLength) {
  RopeConfig r;
  r.type = "dynamic";
  r.theta = 10000.0;
  r.factor = 2.0;
  const int64_t d = 32, max_pos = 100;
  expect_close(rope_frequencies(r, d, max_pos, 80).inv_freq, closed_default(10000.0, d));
  expect_close(rope_frequencies(r, d, max_pos, 100).inv_freq, closed_default(10000.0, d));
  const int64_t seq = 250;
  const double base = 10000.0 * std::pow(2.0 * seq / max_pos - 1.0, double(d) / (d - 2));
  expect_close(rope_frequencies(r, d, max_pos, seq).inv_freq, closed_default(base, d));
}

TEST(RopeTest, YarnRampAndAttentionFactor) {
  RopeConfig r;
  r.type = "yarn";
  r.theta = 10000.0;
  r.factor = 4.0;
  r.original_max_position_embeddings = 4096;
  const int64_t d = 64;
  auto correction_dim = [&](double rotations) {
    return d * std::log(4096.0 / (rotations * 2 * kPi)) / (2 * std::log(10000.0));
  };
  const double low = std::max(std::floor(correction_dim(32.0)), 0.0);
  const double high = std::min(std::ceil(correction_dim(1.0)), double(d - 1));
  ASSERT_GT(high, low);
  ASSERT_LT(high, d / 2);  // the ramp lies inside the spectrum: both regimes are exercised
  std::vector<double> want;
  for (int64_t i = 0; i < d / 2; ++i) {
    const double base_freq = std::pow(10000.0, -2.0 * i / d);
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);  // 0: extrapolate, 1: interpolate
    want.push_back(base_freq / 4.0 * ramp + base_freq * (1 - ramp));
  }
  RopeFrequencies f = rope_frequencies(r, d, 16384);
  expect_close(f.inv_freq, want);
  EXPECT_NEAR(f.attention_scaling, 0.1 * std::log(4.0) + 1.0, 1e-12);

  // DeepSeek-style mscale ratio, and an explicit attention factor.
  r.mscale = 0.707;
  r.mscale_all_dim = 0.5;
  EXPECT_NEAR(rope_frequencies(r, d, 16384).attention_scaling,
              (0.1 * 0.707 * std::log(4.0) + 1) / (0.1 * 0.5 * std::log(4.0) + 1), 1e-12);
  r.attention_factor = 1.25;
  EXPECT_EQ(rope_frequencies(r, d, 16384).attention_scaling, 1.25);

  // Without truncation the correction range keeps its fractional ends.
  r = RopeConfig{};
  r.type = "yarn";
  r.factor = 4.0;
  r.original_max_position_embeddings = 4096;
  r.truncate = false;
  const double lo = correction_dim(32.0), hi = correction_dim(1.0);
  want.clear();
  for (int64_t i = 0; i < d / 2; ++i) {
    const double base_freq = std::pow(10000.0, -2.0 * i / d);
    const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
    want.push_back(base_freq / 4.0 * ramp + base_freq * (1 - ramp));
  }
  expect_close(rope_frequencies(r, d, 16384).inv_freq, want);
}

TEST(RopeTest, Llama3SmoothInterpolation) {
  // Llama 3.1's published parameters.
  RopeConfig r;
  r.type = "llama3";
  r.theta = 500000.0;
  r.factor = 8.0;
  r.low_freq_factor = 1.0;
  r.high_freq_factor = 4.0;
  r.original_max_position_embeddings = 8192;
  const int64_t d = 128;
  std::vector<double> want;
  int kept = 0, scaled = 0, smoothed = 0;
  for (double f : closed_default(500000.0, d)) {
    const double wavelen = 2 * kPi / f;
    if (wavelen < 8192.0 / 4.0) {
      want.push_back(f);
      ++kept;
    } else if (wavelen > 8192.0 / 1.0) {
      want.push_back(f / 8.0);
      ++scaled;
    } else {
      const double s = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      want.push_back((1 - s) * f / 8.0 + s * f);
      ++smoothed;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(scaled, 0);
  EXPECT_GT(smoothed, 0);
  expect_close(rope_frequencies(r, d, 131072).inv_freq, want);
}

TEST(RopeTest, CosSinAndRotation) {
  ModelConfig c;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rope.type = "yarn";
  c.rope.factor = 2.0;
  c.rope.original_max_position_embeddings = 64;
  RotaryEmbedding rope(c, at::kCPU);
  const at::Tensor pos = at::tensor({0, 3, 5}, at::kLong).view({1, 3});
  auto [cos, sin] = rope.cos_sin(pos, at::kDouble);
  ASSERT_EQ(cos.sizes(), (at::IntArrayRef{1, 3, 8}));
  const double m = 0.1 * std::log(2.0) + 1;
  EXPECT_NEAR(cos[0][0][0].item<double>(), m, 1e-7);  // position 0: cos = attention factor
  EXPECT_NEAR(sin[0][0][5].item<double>(), 0.0, 1e-12);
  const at::Tensor inv = rope.inv_freq().to(at::kDouble);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(cos[0][2][i].item<double>(), m * std::cos(5 * inv[i].item<double>()), 1e-6);
    EXPECT_NEAR(sin[0][2][i + 4].item<double>(), m * std::sin(5 * inv[i].item<double>()), 1e-6);
  }

  // Rotation of pairs (i, i + D/2) by angle p·θ_i: (x1 cos - x2 sin, x2 cos + x1 sin).
  const at::Tensor x = at::randn({1, 2, 3, 8}, at::kDouble);
  const at::Tensor y = apply_rotary(x, cos, sin);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t t = 0; t < 3; ++t)
      for (int64_t i = 0; i < 4; ++i) {
        const double c0 = cos[0][t][i].item<double>(), s0 = sin[0][t][i].item<double>();
        const double x1 = x[0][h][t][i].item<double>(), x2 = x[0][h][t][i + 4].item<double>();
        EXPECT_NEAR(y[0][h][t][i].item<double>(), x1 * c0 - x2 * s0, 1e-12);
        EXPECT_NEAR(y[0][h][t][i + 4].item<double>(), x2 * c0 + x1 * s0, 1e-12);
      }
}

}  // namespace
}  // namespace lowrank::nn
