// FNet (mix/fnet.h) against explicit DFT matrices: with F_n = C_n − i·S_n (C = cos, S = sin of
// 2π·jk/n), ℜ(F_T X F_H) = C_T X C_H − S_T X S_H.
#include "lowrank/mix/fnet.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "lowrank/core/error.h"
#include "lowrank/nn/config.h"
#include "tests/nn/reference.h"

namespace lowrank::mix {
namespace {

std::pair<at::Tensor, at::Tensor> dft(int64_t n) {
  at::Tensor c = at::empty({n, n}, at::kDouble), s = at::empty({n, n}, at::kDouble);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t k = 0; k < n; ++k) {
      const double angle = 2.0 * std::numbers::pi * static_cast<double>((j * k) % n) / static_cast<double>(n);
      c[j][k] = std::cos(angle);
      s[j][k] = std::sin(angle);
    }
  return {c, s};
}

TEST(FNetTest, EqualsTheRealPartOfTheDftMatricesProduct) {
  const int64_t B = 2, T = 7, H = 6;
  const at::Tensor x = at::randn({B, T, H}, at::kDouble);
  const auto [ct, st] = dft(T);
  const auto [ch, sh] = dft(H);
  const at::Tensor want = at::matmul(at::matmul(ct, x), ch) - at::matmul(at::matmul(st, x), sh);
  EXPECT_LE((fnet_mix(x) - want).abs().max().item<double>(), 1e-10);
  // float32 in, float32 out
  const at::Tensor y32 = fnet_mix(x.to(at::kFloat));
  EXPECT_EQ(y32.scalar_type(), at::kFloat);
  EXPECT_LE((y32.to(at::kDouble) - want).abs().max().item<double>(), 1e-4);
}

TEST(FNetTest, MixerIsBidirectionalWithoutSlotsAndTakesNoOptions) {
  testing::TinySpec s;
  const nn::ModelConfig c = nn::ModelConfig::from_json(testing::tiny_config(s), "tiny");
  nn::MixerSpec spec{c, 0, "model.layers.0.mixer", Json::object(), nullptr, nullptr};
  FNetMixer mixer(spec);
  EXPECT_FALSE(mixer.causal());
  EXPECT_TRUE(mixer.slots().empty());
  const at::Tensor x = at::randn({1, 5, 24}, at::kDouble);
  EXPECT_TRUE(mixer.forward(x, {}).equal(fnet_mix(x)));
  spec.options = {{"fourier", true}};
  EXPECT_THROW(FNetMixer{spec}, InvalidArgument);
}

}  // namespace
}  // namespace lowrank::mix
