// Performer (mix/performer.h) against performer-pytorch's FAVOR+ given the same projection matrix
// (tests/fixtures/mixers/performer/, written by make.py there), a float64 materialised FAVOR+
// build, its decode state and causality, and its options.
#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/mix/registry.h"
#include "tests/mix/kernel_mixer_testing.h"
#include "tests/testing.h"

namespace lowrank::mix {
namespace {

using namespace testing;

constexpr auto kPerformer = KernelMixerVariant::kPerformer;

TEST(PerformerTest, EqualsPerformerPytorchGivenTheSameProjection) {
  const SafetensorsFile f =
      SafetensorsFile::open(lowrank::testing::fixture("mixers/performer/favor.safetensors"));
  EXPECT_EQ(f.metadata().at("performer_pytorch"), "1.1.4");
  const at::Tensor q = f.load("q"), k = f.load("k"), v = f.load("v");
  const int64_t T = q.size(2);
  const auto config = kernel_config(2, 2, 8);
  for (const bool causal : {false, true}) {
    const auto mixer = make_mixer(kPerformer, config, {{"causal", causal}});
    mixer->set_feature_projection(f.load("projection"));
    const at::Tensor y = mixer->mix(q, k, v, {});
    if (!causal) {
      EXPECT_LE(max_abs_diff(y, f.load("bidirectional")), 1e-10);
      continue;
    }
    // The last row uses the same key stabiliser as performer-pytorch (the maximum over all keys);
    // row t equals performer-pytorch on positions 0..t (its stabiliser there: the max over j ≤ t).
    EXPECT_LE(max_abs_diff(y.select(2, T - 1), f.load("causal_last")), 1e-10);
    EXPECT_LE(max_abs_diff(y, f.load("causal_prefix")), 1e-10);
  }
}

TEST(PerformerTest, EqualsAMaterialisedFavorBuild) {
  // Float64, the features computed here without stabilisers: φ(x) = m^{-1/2}(exp(Wx̂ − ‖x̂‖²/2)),
  // the eps term exp(c)·1e-4 added as performer-pytorch does (c = max of Wx̂ over the keys).
  // 2200 rows: the bidirectional queries run in three chunks of at most 1024 rows.
  const auto config = kernel_config(1, 1, 4);
  for (const int64_t T : {10, 2200}) {
    const Qkv x = random_qkv(1, 1, T, 4, 7);
    const auto mixer = make_mixer(kPerformer, config, {{"causal", false}, {"n_features", 5}});
    const at::Tensor w = mixer->features()->projection();
    const double m = 5.0, eps = 1e-4;
    auto feats = [&](const at::Tensor& t, bool global) {
      const at::Tensor xh = t * std::pow(4.0, -0.25);
      const at::Tensor u = at::matmul(xh, w.t());
      const at::Tensor c = global ? u.amax({-1, -2}, true) : u.amax(-1, true);
      return (at::exp(u - xh.square().sum(-1, true) / 2 - c) + eps) / std::sqrt(m);
    };
    const at::Tensor a = at::matmul(feats(x.q, false), feats(x.k, true).transpose(-1, -2));
    const at::Tensor want = at::matmul(a / a.sum(-1, true), x.v);
    EXPECT_LE(max_abs_diff(mixer->mix(x.q, x.k, x.v, {}), want), 1e-12) << "T " << T;
  }
}

TEST(PerformerTest, DecodeStateEqualsForwardAndIsCausal) {
  const auto config = kernel_config(2, 1, 4);
  const auto mixer = make_mixer(kPerformer, config, Json::object());
  ASSERT_TRUE(mixer->has_decode_state());
  // 70 positions: the forward's causal prefix sums cross a chunk boundary (64).
  expect_causal_and_stepwise(*mixer, config.hidden_size, 70, 1e-10);
}

TEST(PerformerTest, BadOptionsAreRefusedNamingTheOption) {
  const auto config = kernel_config(2, 2, 4);
  expect_invalid(
      [&] {
        make_mixer(kPerformer, config, {{"window", 3}});
      },
      {"unknown option \"window\"", "n_features"});
  expect_invalid([&] { make_mixer(kPerformer, config, {{"n_features", 0}}); }, {"n_features 0"});
  EXPECT_TRUE(registry().contains("performer"));
  EXPECT_EQ(make_mixer(kPerformer, kernel_config(2, 2, 8), Json::object())->features()->n_features(), 16);
}

}  // namespace
}  // namespace lowrank::mix
