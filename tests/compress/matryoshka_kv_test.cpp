// MatryoshkaKV (compress/matryoshka_kv.h) against independent computations:
//  - at r = D the compressed model computes the uncompressed model's logits (1e-5), with and without
//    the cache, and greedy generation gives the same tokens;
//  - at r < D the compressed attention equals plain attention over keys and values replaced by their
//    float64 reconstructions μ + U_r U_rᵀ (x − μ) (a test store does the replacing), and the cached
//    decode equals the full forward;
//  - the bases are orthogonal (UᵀU = I, 1e-6) and match at::linalg_eigh of the covariance computed
//    here in float64 from the rotated keys and values a plain KVCache holds;
//  - the cache holds r/D of the full bytes (measured on the cache), padded per layer to its largest
//    rank with heterogeneous ranks;
//  - the compressed directory reloads to the same logits; bad ranks and ratios are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "lowrank/compress/format.h"
#include "lowrank/compress/matryoshka_kv.h"
#include "lowrank/compress/matryoshka_kv_train.h"
#include "lowrank/compress/methods.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/error.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/generate.h"
#include "tests/compress/compress_testing.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

using compress_testing::small_model;
using compress_testing::token_stream;
using testing::max_abs_diff;

constexpr int64_t kWindow = 24;

// `f` throws InvalidArgument whose message contains `needle`.
template <typename F>
void expect_invalid(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one naming " << needle;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

CalibrationOptions two_windows() {
  CalibrationOptions o;
  o.samples = 2;
  o.seq_len = kWindow;
  o.progress = false;
  return o;
}

// Two windows: calibration draws tokens [0, 24) and [25, 49) from these 50.
at::Tensor calibration_tokens() {
  return token_stream(2 * (kWindow + 1));
}

std::vector<MatryoshkaKVLayer> pca_layers(const nn::Model& model, int64_t rank) {
  return pca_init(collect_kv_statistics(model, calibration_tokens(), two_windows()), rank);
}

at::Tensor logits_of(const nn::Model& model, const at::Tensor& ids) {
  c10::InferenceMode guard;
  return model.forward(ids);
}

// Prefill of all but the last 3 tokens, then one token per step, through a KVCache: the logits of
// every position.
at::Tensor cached_logits(const nn::Model& model, const at::Tensor& ids) {
  c10::InferenceMode guard;
  nn::KVCache cache = model.new_cache(ids.size(0), ids.size(1));
  nn::ForwardOptions o;
  o.cache = &cache;
  const int64_t prefill = ids.size(1) - 3;
  std::vector<at::Tensor> parts{model.forward(ids.narrow(1, 0, prefill), o)};
  for (int64_t t = prefill; t < ids.size(1); ++t) parts.push_back(model.forward(ids.narrow(1, t, 1), o));
  return at::cat(parts, 1);
}

const at::Tensor& test_ids() {
  static const at::Tensor ids = token_stream(60).narrow(0, 3, 20).reshape({2, 10});
  return ids;
}

TEST(MatryoshkaKVTest, FullRankReproducesTheUncompressedModel) {
  const nn::Model dense = small_model(5);
  nn::Model model = small_model(5);
  install_kv_compression(model, pca_layers(model, model.config().head_dim));
  const at::Tensor expected = logits_of(dense, test_ids());
  EXPECT_LT(max_abs_diff(logits_of(model, test_ids()), expected), 1e-5);
  EXPECT_LT(max_abs_diff(cached_logits(model, test_ids()), expected), 1e-5);
  // Greedy decoding through the (compressed-width) cache: the same tokens.
  nn::GenerateOptions g;
  g.max_new_tokens = 8;
  const std::vector<std::vector<int64_t>> prompts{{1, 5, 9}, {2, 7}};
  const auto a = nn::generate(dense, prompts, g);
  const auto b = nn::generate(model, prompts, g);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens);
}

// Plain attention's store that replaces each step's keys and values by their reconstructions from
// the truncated bases, μ + U_r U_rᵀ (x − μ), in float64.
class ReconstructingStore final : public nn::KVStore {
 public:
  ReconstructingStore(const std::vector<MatryoshkaKVLayer>& layers, int64_t batch)
      : layers_(layers), batch_(batch), count_(at::zeros({batch}, at::kLong)) {}
  int64_t batch() const override { return batch_; }
  int64_t num_layers() const override { return static_cast<int64_t>(layers_.size()); }
  int64_t length() const override { return 0; }
  bool has_padding() const override { return false; }
  const at::Tensor& valid_count() const override { return count_; }
  at::Tensor begin(int64_t t, const at::Tensor&) override { return at::ones({batch_, t}, at::kBool); }
  std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k, const at::Tensor& v) override {
    const MatryoshkaKVLayer& l = layers_[static_cast<size_t>(layer)];
    auto rebuild = [](const at::Tensor& x, const at::Tensor& basis, const at::Tensor& mean,
                      const std::vector<int64_t>& ranks) {
      at::Tensor out = x.to(at::kDouble).clone();
      for (int64_t h = 0; h < x.size(1); ++h) {
        const at::Tensor u = basis[h].narrow(1, 0, ranks[static_cast<size_t>(h)]);  // [D, r]
        const at::Tensor centred = out.select(1, h) - mean[h];
        out.select(1, h).copy_(at::matmul(at::matmul(centred, u), u.t()) + mean[h]);
      }
      return out.to(x.scalar_type());
    };
    return {rebuild(k, l.key_basis, l.key_mean, l.key_ranks),
            rebuild(v, l.value_basis, l.value_mean, l.value_ranks)};
  }
  void commit() override {}

 private:
  const std::vector<MatryoshkaKVLayer>& layers_;
  int64_t batch_;
  at::Tensor count_;
};

TEST(MatryoshkaKVTest, TruncatedAttentionEqualsAttentionOverReconstructedKeysAndValues) {
  const nn::Model dense = small_model(5);
  nn::Model model = small_model(5);
  std::vector<MatryoshkaKVLayer> layers = pca_layers(model, 6);  // D = 16
  layers[1].key_ranks = {3, 9};  // heterogeneous: the layer is padded to 9 (keys) and 6 (values)
  layers[1].value_ranks = {6, 2};
  install_kv_compression(model, layers);
  ReconstructingStore store(layers, test_ids().size(0));
  nn::ForwardOptions o;
  o.cache = &store;
  at::Tensor expected;
  {
    c10::InferenceMode guard;
    expected = dense.forward(test_ids(), o);
  }
  const at::Tensor got = logits_of(model, test_ids());
  EXPECT_GT(max_abs_diff(got, logits_of(dense, test_ids())), 1e-3);  // truncation changes the model
  EXPECT_LT(max_abs_diff(got, expected), 1e-5);
  EXPECT_LT(max_abs_diff(cached_logits(model, test_ids()), got), 1e-5);
}

TEST(MatryoshkaKVTest, BasesAreOrthogonalAndMatchEighOfTheCovariance) {
  const nn::Model model = small_model(5);
  const std::vector<MatryoshkaKVLayer> layers = pca_layers(model, 4);
  // The rotated keys and the values of the same two windows, as a plain cache holds them.
  const at::Tensor tokens = calibration_tokens();
  const at::Tensor windows =
      at::stack({tokens.narrow(0, 0, kWindow), tokens.narrow(0, kWindow + 1, kWindow)});
  nn::KVCache cache = model.new_cache(2, kWindow);
  nn::ForwardOptions o;
  o.cache = &cache;
  o.fused_decode = nn::FusedDecode::kOff;
  {
    c10::InferenceMode guard;
    model.forward(windows, o);
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    for (const bool keys : {true, false}) {
      const at::Tensor stored =
          keys ? cache.keys(static_cast<int64_t>(l)) : cache.values(static_cast<int64_t>(l));
      const at::Tensor basis = keys ? layers[l].key_basis : layers[l].value_basis;
      const at::Tensor mean = keys ? layers[l].key_mean : layers[l].value_mean;
      for (int64_t h = 0; h < stored.size(1); ++h) {
        SCOPED_TRACE(str("layer ", l, keys ? " keys" : " values", " head ", h));
        const at::Tensor x =
            stored.select(1, h).narrow(1, 0, kWindow).reshape({-1, stored.size(3)}).to(at::kDouble);
        const at::Tensor mu = x.mean(0);
        const at::Tensor centred = x - mu;
        const at::Tensor covariance = at::matmul(centred.t(), centred) / static_cast<double>(x.size(0));
        const at::Tensor u = basis[h];
        const int64_t D = u.size(0);
        EXPECT_LT(max_abs_diff(at::matmul(u.t(), u), at::eye(D, at::kDouble)), 1e-6);
        EXPECT_GT(at::linalg_det(u).item<double>(), 0);
        EXPECT_LT(max_abs_diff(mean[h], mu), 1e-6);
        // Uᵀ C U is eigh's eigenvalues, descending, on the diagonal and nothing off it.
        const at::Tensor eigenvalues = std::get<0>(at::linalg_eigh(covariance)).flip({0});
        const at::Tensor rayleigh = at::matmul(at::matmul(u.t(), covariance), u);
        const double scale = eigenvalues[0].item<double>();
        EXPECT_LT(max_abs_diff(rayleigh.diagonal(), eigenvalues), 1e-8 * scale);
        EXPECT_LT(max_abs_diff(rayleigh - at::diag(rayleigh.diagonal()), at::zeros({D, D}, at::kDouble)),
                  1e-8 * scale);
      }
    }
  }
}

TEST(MatryoshkaKVTest, CacheHoldsRankOverHeadDimOfTheFullBytes) {
  nn::Model model = small_model(5);
  const nn::Model dense = small_model(5);
  const int64_t D = model.config().head_dim;  // 16
  std::vector<MatryoshkaKVLayer> layers = pca_layers(model, 4);
  install_kv_compression(model, layers);
  auto measured = [&](const nn::Model& m) {
    c10::InferenceMode guard;
    nn::KVCache cache = m.new_cache(2, 10);
    nn::ForwardOptions o;
    o.cache = &cache;
    m.forward(test_ids(), o);
    return cache.bytes();
  };
  const int64_t full = measured(dense), compressed = measured(model);
  EXPECT_EQ(full, 2 * 10 * model.config().num_hidden_layers * 2 * model.config().num_key_value_heads * D * 4);
  EXPECT_EQ(compressed * D, full * 4);
  KVBytes bytes = kv_cache_bytes(model, 2, 10, 4);
  EXPECT_EQ(bytes.full, full);
  EXPECT_EQ(bytes.stored, compressed);
  EXPECT_EQ(bytes.exact, compressed);
  // Heterogeneous ranks: the cache stores each layer at its largest rank, exact counts the heads'.
  layers[0].key_ranks = {2, 5};
  layers[0].value_ranks = {1, 3};
  install_kv_compression(model, layers);
  bytes = kv_cache_bytes(model, 2, 10, 4);
  EXPECT_EQ(bytes.stored, measured(model));
  EXPECT_EQ(bytes.stored, 2 * 10 * 4 * (2 * (5 + 3) + 2 * (4 + 4)));
  EXPECT_EQ(bytes.exact, 2 * 10 * 4 * ((2 + 5 + 1 + 3) + 2 * (4 + 4)));
}

TEST(MatryoshkaKVTest, RanksAndRatiosAreCheckedByName) {
  EXPECT_EQ(kv_rank_for_ratio(128, 0.6), 51);
  EXPECT_EQ(kv_rank_for_ratio(16, 0), 16);
  expect_invalid([] { kv_rank_for_ratio(16, 1.0); }, "--kv-ratio 1");
  expect_invalid([] { kv_rank_for_ratio(16, -0.5); }, "--kv-ratio -0.5");
  nn::Model model = small_model(5);
  std::vector<MatryoshkaKVLayer> layers = pca_layers(model, 4);
  layers[1].value_ranks = {4, 17};
  expect_invalid([&] { install_kv_compression(model, layers); }, "layer 1 head 1: value rank 17");
}

TEST(MatryoshkaKVTest, CompressedDirectoryReloadsAndDecodes) {
  testing::TempDir dir;
  const auto model_dir = testing::tiny_hf_model(dir.path());
  const auto corpus = testing::write_word_corpus(dir / "corpus.txt", 40);
  RunOptions o;
  o.model = model_dir;
  o.out = dir / "kv";
  o.compress.method = "matryoshka_kv";
  o.compress.kv_ratio = 0.5;
  o.calib_data = corpus;
  o.calib_samples = 2;
  o.seq_len = 16;
  o.progress = false;
  const RunResult result = run(o);
  nn::Model loaded = load_model(dir / "kv");
  const int64_t D = loaded.config().head_dim;
  for (int64_t l = 0; l < loaded.config().num_hidden_layers; ++l) {
    ASSERT_TRUE(loaded.attention(l)->kv_compression());
    EXPECT_EQ(loaded.attention(l)->kv_compression()->key_basis.size(2), D / 2);
  }
  EXPECT_EQ(result.report.bytes_after * 2, result.report.bytes_before);
  // The same projections installed here from the same calibration give the same logits.
  nn::Model direct = nn::Model::load(model_dir);
  CalibrationOptions c;
  c.samples = 2;
  c.seq_len = 16;
  const at::Tensor tokens = eval::load_eval_tokens(corpus, model_dir, "train", 2 * 17 * 4).tokens;
  install_kv_compression(direct, pca_init(collect_kv_statistics(direct, tokens, c), D / 2));
  const at::Tensor ids = at::arange(2, 14, at::kLong).reshape({2, 6});
  EXPECT_LT(max_abs_diff(logits_of(loaded, ids), logits_of(direct, ids)), 1e-5);
  nn::GenerateOptions g;
  g.max_new_tokens = 4;
  EXPECT_EQ(nn::generate(loaded, {{1, 5, 9}}, g)[0].tokens.size(), 4u);
  // Bad requests name the option.
  o.out = dir / "bad";
  o.compress.kv_ratio = 1.5;
  expect_invalid([&] { run(o); }, "--kv-ratio 1.5");
  o.compress.kv_ratio = -1;
  o.compress.rank = 1000;
  expect_invalid([&] { run(o); }, "--rank 1000");
  o.compress.rank = 4;
  o.compress.method_options = Json{{"bogus", 1}};
  expect_invalid([&] { run(o); }, "\"bogus\"");
  EXPECT_FALSE(std::filesystem::exists(dir / "bad"));
}

}  // namespace
}  // namespace lowrank::compress

namespace lowrank::compress {
namespace {

TEST(MatryoshkaKVTrainTest, CayleyMapIsTheClosedFormRotationAndOrthogonal) {
  // 2×2: A = [[0, a], [−a, 0]] gives the rotation by θ = 2·atan(a/2), [[cos θ, sin θ], [−sin θ, cos θ]].
  const double a = 0.7;
  const at::Tensor x = at::tensor({0.0, a, 0.0, 0.0}, at::kDouble).reshape({2, 2});
  const double theta = 2 * std::atan(a / 2);
  const at::Tensor rotation =
      at::tensor({std::cos(theta), std::sin(theta), -std::sin(theta), std::cos(theta)}, at::kDouble)
          .reshape({2, 2});
  EXPECT_LT(max_abs_diff(cayley(x), rotation), 1e-12);
  // 16×16: orthogonal with determinant 1, and the inverse gives back the skew part.
  const at::Tensor big = at::randn({3, 16, 16}, at::TensorOptions().dtype(at::kDouble)).mul(0.3);
  const at::Tensor u = cayley(big);
  EXPECT_LT(max_abs_diff(at::matmul(u.transpose(1, 2), u), at::eye(16, at::kDouble).expand({3, 16, 16})),
            1e-6);
  EXPECT_LT(max_abs_diff(at::linalg_det(u), at::ones({3}, at::kDouble)), 1e-9);
  const at::Tensor back = inverse_cayley(u);
  EXPECT_LT(max_abs_diff(back - back.transpose(1, 2), big - big.transpose(1, 2)), 1e-8);
}

TEST(MatryoshkaKVTrainTest, DistillationLowersTheObjectiveAndKeepsTheBasesOrthogonal) {
  nn::Model model = small_model(5);
  const std::vector<MatryoshkaKVLayer> pca = pca_layers(model, 4);  // D = 16: a quarter of the cache
  const at::Tensor windows = calibration_windows(calibration_tokens(), two_windows());
  // The distillation term alone: a random model's cross-entropy would swamp what the projections change.
  MatryoshkaTrainOptions o = matryoshka_train_options(
      Json{{"train_steps", 12}, {"lr", 0.01}, {"kl_weight", 1.0}, {"ce_weight", 0.0}});
  const double before = matryoshka_kv_loss(model, pca, windows, o);
  std::vector<double> losses;
  const std::vector<MatryoshkaKVLayer> trained = train_matryoshka_kv(model, pca, windows, o, &losses);
  ASSERT_EQ(losses.size(), 12u);
  const double after = matryoshka_kv_loss(model, trained, windows, o);
  EXPECT_LT(after, 0.8 * before) << before << " -> " << after;
  for (const MatryoshkaKVLayer& l : trained) {
    EXPECT_EQ(l.key_ranks, pca[0].key_ranks);
    for (const at::Tensor& u : {l.key_basis, l.value_basis})
      EXPECT_LT(max_abs_diff(at::matmul(u.transpose(1, 2), u), at::eye(16, at::kDouble).expand({2, 16, 16})),
                1e-6);
  }
  // Bad options name themselves.
  expect_invalid([] { matryoshka_train_options(Json{{"train_step", 3}}); }, "\"train_step\"");
  expect_invalid([] { matryoshka_train_options(Json{{"lr", -1}}); }, "lr -1");
}

}  // namespace
}  // namespace lowrank::compress

namespace lowrank::compress {
namespace {

// A separable convex objective Σ_i w_i (D − r_i)²: lowering the head whose next step costs least
// is the marginal-allocation optimum, which a brute force over every allocation on the step grid
// finds independently.
TEST(MatryoshkaKVSearchTest, GreedySearchFindsTheBruteForceOptimumOfASeparableConvexObjective) {
  const int64_t D = 16, step = 4, budget = 60;
  std::vector<MatryoshkaKVLayer> layers(2);
  for (MatryoshkaKVLayer& l : layers) {
    l.key_basis = l.value_basis = at::eye(D, at::kDouble).expand({2, D, D});
    l.key_ranks = l.value_ranks = {D, D};
  }
  const double weights[8] = {3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.5, 6.0};
  auto ranks_of = [](const std::vector<MatryoshkaKVLayer>& ls) {
    std::vector<int64_t> r;
    for (const MatryoshkaKVLayer& l : ls)
      for (size_t h = 0; h < 2; ++h) {
        r.push_back(l.key_ranks[h]);
        r.push_back(l.value_ranks[h]);
      }
    return r;
  };
  auto cost = [&](const std::vector<int64_t>& r) {
    double c = 0;
    for (size_t i = 0; i < r.size(); ++i) c += weights[i] * static_cast<double>((D - r[i]) * (D - r[i]));
    return c;
  };
  const std::vector<MatryoshkaKVLayer> found =
      greedy_rank_search(layers, budget, step, [&](const auto& ls) { return cost(ranks_of(ls)); });
  const std::vector<int64_t> ranks = ranks_of(found);
  int64_t total = 0;
  for (int64_t r : ranks) total += r;
  EXPECT_LE(total, budget);
  EXPECT_GT(total, budget - step);
  // Brute force: every allocation of the step grid {16, 12, 8, 4, 1} (a step stops at rank 1) to the
  // 8 (layer, head, K/V) within the budget.
  const int64_t grid[5] = {16, 12, 8, 4, 1};
  double best = std::numeric_limits<double>::infinity();
  for (int64_t code = 0; code < 390625; ++code) {  // 5⁸
    std::vector<int64_t> r;
    int64_t sum = 0;
    for (int64_t i = 0, c = code; i < 8; ++i, c /= 5) {
      r.push_back(grid[c % 5]);
      sum += r.back();
    }
    if (sum <= budget) best = std::min(best, cost(r));
  }
  EXPECT_DOUBLE_EQ(cost(ranks), best);
  expect_invalid([&] { greedy_rank_search(layers, 7, step, [](const auto&) { return 0.0; }); },
                 "budget of 7");
}

TEST(MatryoshkaKVSearchTest, LossGuidedSearchMeetsTheBudgetAndInstalls) {
  nn::Model model = small_model(5);
  const std::vector<MatryoshkaKVLayer> pca = pca_layers(model, 8);
  const at::Tensor windows = calibration_windows(calibration_tokens(), two_windows());
  const MatryoshkaTrainOptions o = matryoshka_train_options(Json{{"rank_search", true}});
  const std::vector<MatryoshkaKVLayer> found = greedy_rank_search(
      pca, 96, 4, [&](const auto& candidate) { return matryoshka_kv_loss(model, candidate, windows, o); });
  int64_t total = 0;
  for (const MatryoshkaKVLayer& l : found)
    for (size_t h = 0; h < 2; ++h) total += l.key_ranks[h] + l.value_ranks[h];
  EXPECT_LE(total, 96);
  EXPECT_GT(total, 92);
  install_kv_compression(model, found);
  EXPECT_EQ(kv_cache_bytes(model, 1, 1, 1).exact, total);
}

}  // namespace
}  // namespace lowrank::compress
