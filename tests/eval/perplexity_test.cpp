// Sliding-window perplexity against a direct transcription of Hugging Face's strided loop
// (labels = -100 outside the scored tail, token-weighted NLL) and against one full-sequence pass;
// its confidence interval against hand computations, over documents and over windows.
#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "lowrank/core/json.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/train/trainer.h"
#include "tests/testing.h"

namespace lowrank::eval {
namespace {

nn::Model tiny_model() {
  return testing::tiny_llama(
      {.vocab_size = 20, .hidden_size = 16, .intermediate_size = 24, .layers = 1, .heads = 2, .kv_heads = 1},
      7);
}

PerplexityOptions options(int64_t seq_len, int64_t stride) {
  PerplexityOptions o;
  o.seq_len = seq_len;
  o.stride = stride;
  o.batch_size = 3;
  o.progress = false;
  return o;
}

// HF: for begin in range(0, N, stride): end = min(begin + L, N); trg = end - prev_end;
// labels[:-trg] = -100; nll_sum += loss * n_valid; n_tokens += n_valid. Returns the NLL of
// every scored stream position (the position of the predicted token), one window at a time.
std::map<int64_t, double> hf_token_nll(const nn::Model& model, const at::Tensor& ids, int64_t L,
                                       int64_t stride) {
  c10::InferenceMode guard;
  const int64_t n = ids.size(0);
  std::map<int64_t, double> nll;
  for (int64_t begin = 0, prev_end = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + L, n);
    const int64_t trg = end - prev_end;
    at::Tensor input = ids.slice(0, begin, end).unsqueeze(0);
    at::Tensor labels = input.clone();
    labels.slice(1, 0, input.size(1) - trg).fill_(-100);
    at::Tensor logits = model.forward(input);
    at::Tensor shift_logits = logits.slice(1, 0, -1).reshape({-1, logits.size(-1)});
    at::Tensor shift_labels = labels.slice(1, 1).reshape({-1});
    at::Tensor per_token = at::cross_entropy_loss(shift_logits, shift_labels, {}, at::Reduction::None, -100);
    for (int64_t j = 0; j < shift_labels.size(0); ++j)
      if (shift_labels[j].item<int64_t>() != -100) nll[begin + j + 1] = per_token[j].item<double>();
    prev_end = end;
    if (end == n) break;
  }
  return nll;
}

double hf_reference(const nn::Model& model, const at::Tensor& ids, int64_t L, int64_t stride) {
  double sum = 0;
  const auto nll = hf_token_nll(model, ids, L, stride);
  for (const auto& [position, value] : nll) sum += value;
  return std::exp(sum / static_cast<double>(nll.size()));
}

TEST(PerplexityTest, MatchesHuggingFaceStridedLoop) {
  nn::Model model = tiny_model();
  at::manual_seed(0);
  const at::Tensor ids = at::randint(0, 20, {103}, at::kLong);
  for (auto [L, stride] : std::vector<std::pair<int64_t, int64_t>>{{16, 8}, {16, 16}, {20, 7}, {32, 3}}) {
    const PerplexityResult r = perplexity(model, ids, options(L, stride));
    EXPECT_NEAR(r.perplexity, hf_reference(model, ids, L, stride), 1e-4 * r.perplexity) << L << " " << stride;
    // Overlapping windows score every token but the first exactly once; non-overlapping ones
    // (stride == L) also skip each window's first token, as HF's loop does.
    EXPECT_EQ(r.tokens, stride < L ? 102 : 102 - (r.chunks - 1));
    EXPECT_LE(r.ci_low, r.ci_high);
    EXPECT_GT(r.chunks, 1);
    // Without document boundaries the interval is over windows.
    EXPECT_EQ(r.ci_unit, "window");
    EXPECT_EQ(r.ci_samples, r.chunks);
  }
}

TEST(PerplexityTest, OneWindowEqualsTheMeanLoss) {
  nn::Model model = tiny_model();
  at::manual_seed(1);
  const at::Tensor ids = at::randint(0, 20, {30}, at::kLong);
  PerplexityOptions o;
  o.seq_len = 64;
  o.progress = false;
  const PerplexityResult r = perplexity(model, ids, o);
  c10::InferenceMode guard;
  const double loss = train::lm_loss(model, ids.unsqueeze(0)).item<double>();
  EXPECT_NEAR(r.nll, loss, 1e-5);
  EXPECT_EQ(r.chunks, 1);
  EXPECT_DOUBLE_EQ(r.ci_low, r.ci_high);
}

// Three units with NLL sums 3, 2, 9 over 2, 1, 3 tokens, worked by hand:
//   r = 14/6 = 7/3; residuals s − r·n = 3 − 14/3 = −5/3, 2 − 7/3 = −1/3, 9 − 7 = 2;
//   Σ residual² = 25/9 + 1/9 + 4 = 62/9; se = sqrt(3/2 · 62/9) / 6 = sqrt(31/3) / 6.
TEST(PerplexityIntervalTest, RatioEstimatorMatchesAHandComputation) {
  const std::vector<double> sums{3, 2, 9};
  const std::vector<int64_t> tokens{2, 1, 3};
  const auto [low, high] = perplexity_interval95(sums, tokens);
  const double se = std::sqrt(31.0 / 3.0) / 6.0;
  EXPECT_NEAR(low, std::exp(7.0 / 3.0 - 1.96 * se), 1e-12);
  EXPECT_NEAR(high, std::exp(7.0 / 3.0 + 1.96 * se), 1e-12);
  // Units of equal size: the interval of the mean of the unit means, sd/√k (means 1, 2, 6:
  // mean 3, sample variance (4 + 1 + 9)/2 = 7).
  const auto [low2, high2] =
      perplexity_interval95(std::vector<double>{4, 8, 24}, std::vector<int64_t>{4, 4, 4});
  EXPECT_NEAR(low2, std::exp(3 - 1.96 * std::sqrt(7.0 / 3.0)), 1e-12);
  EXPECT_NEAR(high2, std::exp(3 + 1.96 * std::sqrt(7.0 / 3.0)), 1e-12);
  const auto [one_low, one_high] = perplexity_interval95(std::vector<double>{5}, std::vector<int64_t>{2});
  EXPECT_DOUBLE_EQ(one_low, std::exp(2.5));
  EXPECT_DOUBLE_EQ(one_high, std::exp(2.5));
  EXPECT_THROW(perplexity_interval95(std::vector<double>{1, 2}, std::vector<int64_t>{1, 0}), InvalidArgument);
  EXPECT_THROW(perplexity_interval95(std::vector<double>{}, std::vector<int64_t>{}), InvalidArgument);
}

// The per-document interval, recomputed by hand from HF's per-token NLLs: each scored position
// goes to the document it lies in (the document's first token is predicted from the previous
// document's end), documents are the units of the ratio estimator.
TEST(PerplexityTest, PerDocumentIntervalMatchesAHandComputation) {
  nn::Model model = tiny_model();
  at::manual_seed(2);
  const at::Tensor ids = at::randint(0, 20, {103}, at::kLong);
  // Document 1 is one token long; document 3 starts inside a window's scored tail.
  const std::vector<int64_t> starts{0, 10, 11, 40, 77};
  for (auto [L, stride] : std::vector<std::pair<int64_t, int64_t>>{{16, 8}, {16, 16}, {64, 64}}) {
    const PerplexityResult r = perplexity(model, ids, options(L, stride), starts);
    std::vector<double> sum(starts.size(), 0.0);
    std::vector<double> count(starts.size(), 0.0);
    for (const auto& [position, nll] : hf_token_nll(model, ids, L, stride)) {
      size_t d = 0;
      while (d + 1 < starts.size() && starts[d + 1] <= position) ++d;
      sum[d] += nll;
      count[d] += 1;
    }
    double total = 0, n = 0;
    for (size_t d = 0; d < starts.size(); ++d) {
      total += sum[d];
      n += count[d];
    }
    const double mean = total / n;
    double residuals = 0;
    for (size_t d = 0; d < starts.size(); ++d)
      residuals += (sum[d] - mean * count[d]) * (sum[d] - mean * count[d]);
    const double k = static_cast<double>(starts.size());
    const double se = std::sqrt(k / (k - 1) * residuals) / n;
    EXPECT_EQ(r.ci_unit, "document") << L;
    EXPECT_EQ(r.ci_samples, 5) << L;
    EXPECT_NEAR(r.nll, mean, 1e-5) << L;
    EXPECT_NEAR(std::log(r.ci_low), mean - 1.96 * se, 1e-5) << L;
    EXPECT_NEAR(std::log(r.ci_high), mean + 1.96 * se, 1e-5) << L;
    // The interval is centred on the token-weighted perplexity.
    EXPECT_NEAR(std::log(r.ci_low) + std::log(r.ci_high), 2 * r.nll, 1e-9) << L;
  }
}

TEST(PerplexityTest, FallsBackToWindowsWithoutTwoScoredDocuments) {
  nn::Model model = tiny_model();
  at::manual_seed(3);
  const at::Tensor ids = at::randint(0, 20, {50}, at::kLong);
  const PerplexityResult windows = perplexity(model, ids, options(16, 8));
  // One document, or a first document of one token (the stream's first, never scored) and a
  // second holding the rest: one scored document either way, so the units are windows.
  for (const std::vector<int64_t>& starts : {std::vector<int64_t>{0}, std::vector<int64_t>{0, 1}}) {
    const PerplexityResult r = perplexity(model, ids, options(16, 8), starts);
    EXPECT_EQ(r.ci_unit, "window");
    EXPECT_EQ(r.ci_samples, r.chunks);
    EXPECT_DOUBLE_EQ(r.ci_low, windows.ci_low);
    EXPECT_DOUBLE_EQ(r.ci_high, windows.ci_high);
  }
  for (const std::vector<int64_t>& bad :
       {std::vector<int64_t>{1, 20}, std::vector<int64_t>{0, 30, 20}, std::vector<int64_t>{0, 50}})
    EXPECT_THROW(perplexity(model, ids, options(16, 8), bad), InvalidArgument);
  const OrderedJson j = perplexity(model, ids, options(16, 8), std::vector<int64_t>{0, 25}).to_json();
  EXPECT_EQ(j["ci_unit"], "document");
  EXPECT_EQ(j["ci_samples"], 2);
}

}  // namespace
}  // namespace lowrank::eval
