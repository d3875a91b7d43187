// Local attention (mix/local_attention.h) against a materialised float64 softmax under the window
// mask built by loops, full attention when the window covers the sequence, its decode state and
// causality, and its options.
#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/mix/registry.h"
#include "tests/mix/kernel_mixer_testing.h"

namespace lowrank::mix {
namespace {

using namespace testing;

constexpr auto kLocal = KernelMixerVariant::kLocal;

TEST(LocalAttentionTest, EqualsMaskedSoftmaxForEveryWindow) {
  const auto config = kernel_config(2, 2, 4);
  const int64_t T = 10;
  const Qkv x = random_qkv(2, 2, T, 4, 11);
  for (const bool causal : {true, false})
    for (const int64_t w : {1, 2, 3, 4, 7, 10, 25}) {
      const auto mixer = make_mixer(kLocal, config, {{"causal", causal}, {"window", w}});
      const at::Tensor want = masked_softmax_attention(x.q, x.k, x.v, window_mask(T, w, causal));
      EXPECT_LE(max_abs_diff(mixer->mix(x.q, x.k, x.v, {}), want), 1e-12)
          << "causal " << causal << ", w " << w;
    }
}

TEST(LocalAttentionTest, WindowCoveringTheSequenceIsFullAttention) {
  const auto config = kernel_config(1, 1, 4);
  const int64_t T = 6;
  const Qkv x = random_qkv(1, 1, T, 4, 12);
  EXPECT_LE(max_abs_diff(make_mixer(kLocal, config, {{"window", T}})->mix(x.q, x.k, x.v, {}),
                         masked_softmax_attention(x.q, x.k, x.v, causal_mask(T))),
            1e-12);
  EXPECT_LE(
      max_abs_diff(make_mixer(kLocal, config, {{"causal", false}, {"window", 2 * T}})->mix(x.q, x.k, x.v, {}),
                   masked_softmax_attention(x.q, x.k, x.v, at::ones({T, T}, at::kBool))),
      1e-12);
}

TEST(LocalAttentionTest, DecodeStateEqualsForwardAndIsCausal) {
  const auto config = kernel_config(4, 2, 4);
  for (const int64_t w : {1, 4})
    expect_causal_and_stepwise(*make_mixer(kLocal, config, {{"window", w}}), config.hidden_size, 9, 1e-12);
}

TEST(LocalAttentionTest, BadOptionsAreRefusedNamingTheOption) {
  const auto config = kernel_config(2, 2, 4);
  expect_invalid(
      [&] {
        make_mixer(kLocal, config, {{"n_features", 8}});
      },
      {"unknown option \"n_features\"", "window"});
  expect_invalid([&] { make_mixer(kLocal, config, {{"window", -1}}); }, {"window -1"});
  EXPECT_TRUE(registry().contains("local"));
  EXPECT_EQ(make_mixer(kLocal, config, Json::object())->features(), nullptr);
}

}  // namespace
}  // namespace lowrank::mix
