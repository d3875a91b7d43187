// Local attention (mix/local_attention.h) against a materialised float64 softmax under the window
// mask built by loops, full attention when the window covers the sequence, its decode state and
// causality, and its options.
#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/mix/registry.h"
#include "lowrank/nn/rope.h"
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

// rope: true rotates q and k by RoPE before the window (checked against the projections applied by
// hand, rotated by nn's apply_rotary, and a masked softmax); the decode step, given each
// position's cos/sin, equals the forward; without cos/sin the forward refuses.
TEST(LocalAttentionTest, RopeRotatesQueriesAndKeysAndStepsWithPositions) {
  const auto config = kernel_config(2, 2, 4);
  const int64_t T = 6, w = 3, H = config.hidden_size;
  const auto mixer = make_mixer(kLocal, config, {{"window", w}, {"rope", true}});
  at::manual_seed(14);
  const at::Tensor x = at::randn({1, T, H}, at::kDouble);
  const nn::RotaryEmbedding rope(config, at::kCPU, at::kDouble);
  const auto context_at = [&](int64_t first, int64_t n) {
    nn::MixerContext c;
    c.positions = at::arange(first, first + n, at::kLong).unsqueeze(0);
    std::tie(c.cos, c.sin) = rope.cos_sin(c.positions, at::kDouble);
    return c;
  };
  const nn::MixerContext full = context_at(0, T);
  const at::Tensor y = mixer->forward(x, full);
  const auto slots = std::as_const(*mixer).slots();
  const auto heads = [&](int64_t i) {
    return at::matmul(x, slots[i]->base().dense_weight().t()).view({1, T, 2, 4}).transpose(1, 2);
  };
  const at::Tensor q = nn::apply_rotary(heads(0), full.cos, full.sin);
  const at::Tensor k = nn::apply_rotary(heads(1), full.cos, full.sin);
  const at::Tensor o = masked_softmax_attention(q, k, heads(2), window_mask(T, w, true));
  const at::Tensor want =
      at::matmul(o.transpose(1, 2).reshape({1, T, H}), slots[3]->base().dense_weight().t());
  EXPECT_LE(max_abs_diff(y, want), 1e-12);
  const std::unique_ptr<nn::MixerState> state = mixer->new_state(1);
  for (int64_t t = 0; t < T; ++t)
    EXPECT_LE(max_abs_diff(mixer->step(x.narrow(1, t, 1), *state, context_at(t, 1)), y.narrow(1, t, 1)),
              1e-12);
  expect_invalid([&] { (void)mixer->forward(x, nn::MixerContext{}); }, {"rope", "cos/sin"});
}

// Float32 (the models' dtype) stays within rounding of float64 over a longer sequence, where the
// stabilisers matter.
TEST(LocalAttentionTest, ScatterbrainAndPerformerInFloat32MatchFloat64) {
  const auto config = kernel_config(1, 1, 16);
  const Qkv x = random_qkv(1, 1, 200, 16, 15, 1.5);
  for (const KernelMixerVariant variant : {KernelMixerVariant::kScatterbrain, KernelMixerVariant::kPerformer})
    for (const bool causal : {true, false}) {
      Json options = {{"causal", causal}};
      if (variant == KernelMixerVariant::kScatterbrain) options["window"] = 16;
      const auto mixer = make_mixer(variant, config, options);
      const at::Tensor f64 = mixer->mix(x.q, x.k, x.v, {});
      const at::Tensor f32 = mixer->mix(x.q.to(at::kFloat), x.k.to(at::kFloat), x.v.to(at::kFloat), {});
      EXPECT_TRUE(f32.isfinite().all().item<bool>()) << mixer->name() << ", causal " << causal;
      EXPECT_LE(max_abs_diff(f32, f64), 1e-4) << mixer->name() << ", causal " << causal;
    }
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
