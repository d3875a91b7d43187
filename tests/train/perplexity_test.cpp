// Sliding-window perplexity against a direct transcription of Hugging Face's strided loop
// (labels = -100 outside the scored tail, token-weighted NLL) and against one full-sequence pass.
#include <cmath>

#include <gtest/gtest.h>

#include "lowrank/core/json.h"
#include "lowrank/train/perplexity.h"
#include "lowrank/train/trainer.h"
#include "tests/testing.h"

namespace lowrank::train {
namespace {

nn::Model tiny_model() {
  const Json config = Json::parse(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 20, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64})");
  return nn::Model::random(nn::ModelConfig::from_json(config, "tiny"), 7);
}

// HF: for begin in range(0, N, stride): end = min(begin + L, N); trg = end - prev_end;
// labels[:-trg] = -100; nll_sum += loss * n_valid; n_tokens += n_valid.
double hf_reference(const nn::Model& model, const at::Tensor& ids, int64_t L, int64_t stride) {
  c10::InferenceMode guard;
  const int64_t n = ids.size(0);
  double nll_sum = 0;
  int64_t count = 0;
  for (int64_t begin = 0, prev_end = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + L, n);
    const int64_t trg = end - prev_end;
    at::Tensor input = ids.slice(0, begin, end).unsqueeze(0);
    at::Tensor labels = input.clone();
    labels.slice(1, 0, input.size(1) - trg).fill_(-100);
    at::Tensor logits = model.forward(input);
    at::Tensor shift_logits = logits.slice(1, 0, -1).reshape({-1, logits.size(-1)});
    at::Tensor shift_labels = labels.slice(1, 1).reshape({-1});
    const int64_t valid = shift_labels.ne(-100).sum().item<int64_t>();
    if (valid > 0)
      nll_sum +=
          at::cross_entropy_loss(shift_logits, shift_labels, {}, at::Reduction::Sum, -100).item<double>();
    count += valid;
    prev_end = end;
    if (end == n) break;
  }
  return std::exp(nll_sum / static_cast<double>(count));
}

TEST(PerplexityTest, MatchesHuggingFaceStridedLoop) {
  nn::Model model = tiny_model();
  at::manual_seed(0);
  const at::Tensor ids = at::randint(0, 20, {103}, at::kLong);
  for (auto [L, stride] : std::vector<std::pair<int64_t, int64_t>>{{16, 8}, {16, 16}, {20, 7}, {32, 3}}) {
    PerplexityOptions o;
    o.seq_len = L;
    o.stride = stride;
    o.batch_size = 3;
    o.progress = false;
    const PerplexityResult r = perplexity(model, ids, o);
    EXPECT_NEAR(r.perplexity, hf_reference(model, ids, L, stride), 1e-4 * r.perplexity) << L << " " << stride;
    // Overlapping windows score every token but the first exactly once; non-overlapping ones
    // (stride == L) also skip each window's first token, as HF's loop does.
    EXPECT_EQ(r.tokens, stride < L ? 102 : 102 - (r.chunks - 1));
    EXPECT_LE(r.ci_low, r.ci_high);
    EXPECT_GT(r.chunks, 1);
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
  const double loss = lm_loss(model, ids.unsqueeze(0)).item<double>();
  EXPECT_NEAR(r.nll, loss, 1e-5);
  EXPECT_EQ(r.chunks, 1);
  EXPECT_DOUBLE_EQ(r.ci_low, r.ci_high);
}

}  // namespace
}  // namespace lowrank::train
