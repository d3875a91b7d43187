// Scatterbrain (mix/scatterbrain.h) against independent float64 computations: a window covering
// the sequence is exact softmax attention; the output equals the naive O(n²) build (materialise
// φ(Q)φ(K)ᵀ + S with S on Ω, then normalise) for the local and the LSH support, Ω and the LSH
// chunks rebuilt here by loops; the recovered unnormalised entries are exact on Ω; over 500
// feature draws their mean off Ω is within 4σ of exp(q·k/√d); the causal decode state equals the
// forward; bad options are refused naming the option.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/mix/registry.h"
#include "tests/mix/kernel_mixer_testing.h"

namespace lowrank::mix {
namespace {

using namespace testing;

constexpr auto kSb = KernelMixerVariant::kScatterbrain;

// The naive build: Â = where(Ω, exp(QKᵀ/√d), φ(Q)φ(K)ᵀ), zero above the diagonal when causal,
// rows normalised, times V.
at::Tensor naive_scatterbrain(const Qkv& x, const at::Tensor& projection, const at::Tensor& omega,
                              bool causal) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(x.q.size(-1)));
  const at::Tensor exact = at::exp(at::matmul(x.q, x.k.transpose(-1, -2)) * scale);
  const at::Tensor low_rank =
      at::matmul(cosh_features(x.q, projection), cosh_features(x.k, projection).transpose(-1, -2));
  at::Tensor a = at::where(omega, exact, low_rank);
  if (causal) a = a * causal_mask(x.q.size(2)).to(at::kDouble);
  return at::matmul(a / a.sum(-1, true), x.v);
}

// Ω of the LSH support rebuilt from the mixer's rotations: per round, queries and keys sorted by
// (bucket, position), bucket = argmax [xR; −xR], cut into chunks of C; (i, j) ∈ Ω when some round
// puts them in chunks of the same index. [B, H, T, T].
at::Tensor lsh_omega(const Qkv& x, const at::Tensor& rotations, int64_t bucket_size) {
  const int64_t B = x.q.size(0), H = x.q.size(1), T = x.q.size(2);
  const int64_t C = std::min(bucket_size, T);
  at::Tensor omega = at::zeros({B, H, T, T}, at::kBool);
  auto chunks = [&](const at::Tensor& v, const at::Tensor& r) {  // v [T, d] -> chunk of each position
    const at::Tensor u = at::matmul(v, r);
    const at::Tensor bucket = at::cat({u, -u}, -1).argmax(-1);
    std::vector<int64_t> order(T);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return bucket[a].item<int64_t>() < bucket[b].item<int64_t>();
    });
    std::vector<int64_t> chunk(T);
    for (int64_t rank = 0; rank < T; ++rank) chunk[order[rank]] = rank / C;
    return chunk;
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 0; r < rotations.size(0); ++r) {
        const auto cq = chunks(x.q[b][h], rotations[r]);
        const auto ck = chunks(x.k[b][h], rotations[r]);
        for (int64_t i = 0; i < T; ++i)
          for (int64_t j = 0; j < T; ++j)
            if (cq[i] == ck[j]) omega[b][h][i][j] = true;
      }
  return omega;
}

TEST(ScatterbrainTest, WindowCoveringTheSequenceIsExactSoftmaxAttention) {
  const auto config = kernel_config(2, 2, 4);
  const int64_t T = 9;
  const Qkv x = random_qkv(2, 2, T, 4, 1);
  for (const bool causal : {true, false}) {
    // Causal: the last w ≥ T keys; bidirectional (centred): ⌊w/2⌋ ≥ T − 1 either side.
    const auto mixer = make_mixer(kSb, config, {{"causal", causal}, {"window", causal ? T : 2 * T}});
    const at::Tensor want =
        masked_softmax_attention(x.q, x.k, x.v, causal ? causal_mask(T) : at::ones({T, T}, at::kBool));
    EXPECT_LE(max_abs_diff(mixer->mix(x.q, x.k, x.v, {}), want), 1e-5) << "causal " << causal;
  }
}

TEST(ScatterbrainTest, LocalSupportEqualsTheNaiveBuild) {
  const auto config = kernel_config(2, 1, 4);
  const int64_t T = 11;
  const Qkv x = random_qkv(2, 2, T, 4, 2);
  for (const bool causal : {true, false})
    for (const int64_t w : {1, 3, 4}) {
      const auto mixer = make_mixer(kSb, config, {{"causal", causal}, {"window", w}, {"n_features", 6}});
      const at::Tensor want =
          naive_scatterbrain(x, mixer->features()->projection(), window_mask(T, w, causal), causal);
      EXPECT_LE(max_abs_diff(mixer->mix(x.q, x.k, x.v, {}), want), 1e-10)
          << "causal " << causal << ", w " << w;
    }
}

// Past 1024 query rows the local support runs in chunks of whole blocks (and, bidirectional, the
// query features are made per chunk): 2200 rows are three chunks, the last one ragged.
TEST(ScatterbrainTest, LocalSupportOverSeveralRowChunksEqualsTheNaiveBuild) {
  const auto config = kernel_config(1, 1, 4);
  const int64_t T = 2200;
  const Qkv x = random_qkv(1, 1, T, 4, 12);
  for (const bool causal : {true, false})
    for (const int64_t w : {5, 64}) {
      const at::Tensor omega = window_mask(T, w, causal);
      const auto mixer = make_mixer(kSb, config, {{"causal", causal}, {"window", w}, {"n_features", 6}});
      const at::Tensor want = naive_scatterbrain(x, mixer->features()->projection(), omega, causal);
      EXPECT_LE(max_abs_diff(mixer->mix(x.q, x.k, x.v, {}), want), 1e-10)
          << "causal " << causal << ", w " << w;
      const auto local = make_mixer(KernelMixerVariant::kLocal, config, {{"causal", causal}, {"window", w}});
      EXPECT_LE(max_abs_diff(local->mix(x.q, x.k, x.v, {}), masked_softmax_attention(x.q, x.k, x.v, omega)),
                1e-10)
          << "local, causal " << causal << ", w " << w;
    }
}

TEST(ScatterbrainTest, LshSupportEqualsTheNaiveBuild) {
  const auto config = kernel_config(2, 2, 4);
  const int64_t T = 13;
  const Qkv x = random_qkv(2, 2, T, 4, 3);
  for (const int64_t n_hashes : {1, 3}) {
    const Json options = {{"causal", false}, {"support", "lsh"}, {"bucket_size", 4}, {"n_hashes", n_hashes}};
    const auto mixer = make_mixer(kSb, config, options);
    const at::Tensor omega = lsh_omega(x, mixer->lsh_rotations(T), 4);
    // Several rounds must overlap somewhere for the duplicate correction to be exercised.
    const at::Tensor want = naive_scatterbrain(x, mixer->features()->projection(), omega, false);
    EXPECT_LE(max_abs_diff(mixer->mix(x.q, x.k, x.v, {}), want), 1e-10) << n_hashes << " hashes";
  }
}

// Â recovered from the mixer itself: with V = I its output is the normalised matrix A, and
// Â_ij = A_ij·exp(s_ii)/A_ii since the diagonal is on Ω and exact there.
at::Tensor recovered_unnormalised(const KernelAttentionMixer& mixer, const Qkv& x) {
  const int64_t T = x.q.size(2);
  const at::Tensor eye = at::eye(T, at::kDouble).expand({x.q.size(0), x.q.size(1), T, T});
  const at::Tensor a = mixer.mix(x.q, x.k, eye, {});
  const double scale = 1.0 / std::sqrt(static_cast<double>(x.q.size(-1)));
  const at::Tensor s_diag = (x.q * x.k).sum(-1, true) * scale;
  return a * at::exp(s_diag) / a.diagonal(0, -2, -1).unsqueeze(-1);
}

TEST(ScatterbrainTest, EntriesOnTheSupportAreExactAndOffItThePerformerEstimate) {
  const auto config = kernel_config(1, 1, 4);
  const int64_t T = 8, w = 3;
  const Qkv x = random_qkv(1, 1, T, 4, 4);
  const auto mixer = make_mixer(kSb, config, {{"causal", false}, {"window", w}});
  const at::Tensor a_hat = recovered_unnormalised(*mixer, x);
  const at::Tensor exact = at::exp(at::matmul(x.q, x.k.transpose(-1, -2)) / 2.0);
  const at::Tensor omega = window_mask(T, w, false).expand_as(exact);
  const at::Tensor on = a_hat.masked_select(omega), want_on = exact.masked_select(omega);
  EXPECT_LE(((on - want_on).abs() / want_on).max().item<double>(), 1e-10);
  const at::Tensor lr = at::matmul(cosh_features(x.q, mixer->features()->projection()),
                                   cosh_features(x.k, mixer->features()->projection()).transpose(-1, -2));
  EXPECT_LE(max_abs_diff(a_hat.masked_select(omega.logical_not()), lr.masked_select(omega.logical_not())),
            1e-10);
}

// The estimator off Ω is the features' φ(q)·φ(k) (checked through the mixer above); here its
// mean over 500 draws of the features, built as the mixer builds them (cosh, fly's stabilisers,
// a fresh seed per draw), against exp(q·k/√d).
TEST(ScatterbrainTest, MeanOfFiveHundredFeatureDrawsIsWithinFourSigmaOfTheExactEntries) {
  const int64_t T = 6, d = 4, draws = 500;
  const Qkv x = random_qkv(1, 1, T, d, 5, 0.7);
  at::Tensor sum = at::zeros({T, T}, at::kDouble), sum_sq = at::zeros({T, T}, at::kDouble);
  for (int64_t seed = 0; seed < draws; ++seed) {
    const RandomFeatures features(d, 5, FeatureKind::kCosh, StabiliseOn::kLogFeature, 0.0, seed);
    const QueryFeatures q = features.queries(x.q[0][0]);
    const KeyFeatures k = features.keys(x.k[0][0], {});
    const double half_log_m = 0.5 * std::log(static_cast<double>(features.n_features()));
    const at::Tensor a =
        at::matmul(q.features, k.features.t()) * at::exp(q.log_scale + k.stabiliser - half_log_m);
    sum += a;
    sum_sq += a * a;
  }
  const at::Tensor mean = sum / draws;
  const at::Tensor sigma = ((sum_sq / draws - mean * mean).clamp_min(0) / (draws - 1)).sqrt();
  const at::Tensor exact = at::exp(at::matmul(x.q, x.k.transpose(-1, -2)) / std::sqrt(double(d)))[0][0];
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) {
      const double dev = std::abs(mean[i][j].item<double>() - exact[i][j].item<double>());
      EXPECT_GT(sigma[i][j].item<double>(), 0.0);
      EXPECT_LE(dev, 4 * sigma[i][j].item<double>()) << "entry " << i << "," << j;
    }
}

TEST(ScatterbrainTest, DecodeStateEqualsForwardAndIsCausal) {
  const auto config = kernel_config(4, 2, 4);
  for (const int64_t w : {1, 3}) {
    const auto mixer = make_mixer(kSb, config, {{"window", w}, {"n_features", 6}});
    ASSERT_TRUE(mixer->has_decode_state());
    expect_causal_and_stepwise(*mixer, config.hidden_size, 9, 1e-10);
  }
  // Bidirectional and LSH mixers keep no decode state.
  EXPECT_FALSE(make_mixer(kSb, config, {{"causal", false}})->has_decode_state());
  EXPECT_THROW((void)make_mixer(kSb, config, {{"causal", false}})->new_state(1), Unsupported);
}

TEST(ScatterbrainTest, PaddedKeysAreIgnored) {
  const auto config = kernel_config(1, 1, 4);
  const int64_t T = 7;
  const Qkv x = random_qkv(1, 1, T, 4, 6);
  const auto mixer = make_mixer(kSb, config, {{"causal", false}, {"window", 3}});
  // The first two keys are padding: the rows equal a naive build over the other keys.
  at::Tensor valid = at::ones({1, 1, T, 1}, at::kDouble);
  valid.narrow(2, 0, 2).zero_();
  const at::Tensor keep = valid.view({1, 1, 1, T}).gt(0);
  const double scale = 0.5;
  const at::Tensor exact = at::exp(at::matmul(x.q, x.k.transpose(-1, -2)) * scale);
  const at::Tensor w = mixer->features()->projection();
  const at::Tensor low_rank = at::matmul(cosh_features(x.q, w), cosh_features(x.k, w).transpose(-1, -2));
  const at::Tensor a = at::where(window_mask(T, 3, false), exact, low_rank) * keep.to(at::kDouble);
  const at::Tensor want = at::matmul(a / a.sum(-1, true), x.v);
  EXPECT_LE(max_abs_diff(mixer->mix(x.q, x.k, x.v, valid), want), 1e-10);
}

// Padding through the forward (context.valid): the real positions' outputs equal those of the
// unpadded sequence, for every variant, with the padding before the first token or after the last
// (the local windows count positions, and masked keys leave every sum). At 2200 tokens the
// padding falls in another row chunk than the first (see above).
TEST(ScatterbrainTest, PaddedForwardEqualsTheUnpaddedSequenceForEveryVariant) {
  const auto config = kernel_config(2, 1, 4);
  const int64_t P = 3, H = config.hidden_size;
  for (const int64_t T : {7, 2200})
    for (const bool left : {true, false}) {
      at::manual_seed(13);
      const at::Tensor x = at::randn({1, T, H}, at::kDouble);
      const at::Tensor junk = at::randn({1, P, H}, at::kDouble) * 3;
      const at::Tensor padded = left ? at::cat({junk, x}, 1) : at::cat({x, junk}, 1);
      const at::Tensor real = at::ones({1, T}, at::kBool), pad = at::zeros({1, P}, at::kBool);
      nn::MixerContext plain, with_padding;
      with_padding.valid = left ? at::cat({pad, real}, 1) : at::cat({real, pad}, 1);
      for (const KernelMixerVariant variant :
           {kSb, KernelMixerVariant::kPerformer, KernelMixerVariant::kLocal})
        for (const bool causal : {true, false}) {
          Json options = {{"causal", causal}};
          if (variant != KernelMixerVariant::kPerformer) options["window"] = 3;
          const auto mixer = make_mixer(variant, config, options);
          const at::Tensor want = mixer->forward(x, plain);
          const at::Tensor got = mixer->forward(padded, with_padding).narrow(1, left ? P : 0, T);
          EXPECT_LE(max_abs_diff(got, want), 1e-10)
              << mixer->name() << ", causal " << causal << ", T " << T << (left ? ", left" : ", right");
        }
    }
}

TEST(ScatterbrainTest, BadOptionsAreRefusedNamingTheOption) {
  const auto config = kernel_config(2, 2, 4);
  expect_invalid([&] { make_mixer(kSb, config, {{"windw", 3}}); }, {"unknown option \"windw\"", "window"});
  expect_invalid([&] { make_mixer(kSb, config, {{"window", 0}}); }, {"window 0"});
  expect_invalid([&] { make_mixer(kSb, config, {{"support", "global"}}); }, {"support \"global\""});
  expect_invalid([&] { make_mixer(kSb, config, {{"support", "lsh"}}); }, {"lsh", "bidirectional"});
  expect_invalid([&] { make_mixer(kSb, config, {{"n_features", 1}}); }, {"n_features 1"});
  expect_invalid(
      [&] {
        make_mixer(kSb, config, {{"causal", false}, {"support", "lsh"}, {"n_hashes", 0}});
      },
      {"n_hashes 0"});
  expect_invalid(
      [&] {
        make_mixer(kSb, config, {{"causal", false}, {"support", "lsh"}, {"bucket_size", -2}});
      },
      {"bucket_size -2"});
  expect_invalid([&] { make_mixer(kSb, config, {{"causal", "yes"}}); }, {"causal"});
  expect_invalid([&] { make_mixer(kSb, config, {{"feature_seed", -1}}); }, {"feature_seed -1"});
}

TEST(ScatterbrainTest, RegisteredWithTheDefaultFeatureCount) {
  EXPECT_TRUE(registry().contains("scatterbrain"));
  // d = 8: ⌊8 ln 8⌋ = 16 features, 8 cosh pairs.
  const auto mixer = make_mixer(kSb, kernel_config(2, 2, 8), Json::object());
  EXPECT_EQ(mixer->features()->n_features(), 16);
  EXPECT_EQ(mixer->features()->projection().sizes(), (at::IntArrayRef{8, 8}));
}

}  // namespace
}  // namespace lowrank::mix
