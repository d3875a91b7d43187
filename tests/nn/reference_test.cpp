// nn/model against the independent per-head reference of tests/nn/reference.h on tiny random
// checkpoints written here: Qwen2-style (q/k/v bias, tied embeddings), Mistral-style (sliding
// window), Llama with attention and MLP biases, left-padded batches, bf16 storage.
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include "lowrank/nn/model.h"
#include "tests/nn/reference.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

using testing::max_abs_diff;
using testing::TinySpec;

const std::vector<int64_t> kIds = {3, 17, 5, 30, 2, 9, 11, 36, 0, 21, 8, 14, 25, 6};

at::Tensor row(const std::vector<int64_t>& ids) {
  return at::tensor(ids, at::kLong).view({1, -1});
}

// Loads `dir` in float64 and float32 and checks both against the reference.
void check_against_reference(const std::filesystem::path& dir, const TinySpec& s, const testing::Weights& w) {
  const at::Tensor want = testing::reference_logits(s, w, kIds);
  c10::InferenceMode guard;
  const Model f64 = Model::load(dir, {at::kDouble, at::kCPU});
  EXPECT_LE(max_abs_diff(f64.forward(row(kIds))[0], want), 1e-10);
  const Model f32 = Model::load(dir);
  EXPECT_LE(max_abs_diff(f32.forward(row(kIds))[0], want), 1e-4);
}

TEST(ReferenceTest, Qwen2StyleBiasAndTiedEmbeddings) {
  TinySpec s;
  s.arch = "Qwen2ForCausalLM";
  s.model_type = "qwen2";
  s.qkv_bias = true;
  s.tied = true;
  s.heads = 6;
  s.kv_heads = 2;
  s.head_dim = 4;
  const auto w = testing::random_weights(s, 1);
  ASSERT_FALSE(w.contains("lm_head.weight"));
  testing::TempDir dir;
  Json config = testing::tiny_config(s);
  config.erase("attention_bias");  // Qwen2 has q/k/v bias without the key
  testing::write_checkpoint(dir.path(), config, w);
  check_against_reference(dir.path(), s, w);

  // The tied head is the embedding: not saved, and a round trip keeps it tied.
  const Model m = Model::load(dir.path());
  testing::TempDir out;
  m.save(out.path());
  EXPECT_FALSE(Checkpoint::open(out.path()).contains("lm_head.weight"));
  check_against_reference(out.path(), s, w);
}

TEST(ReferenceTest, MistralStyleSlidingWindow) {
  TinySpec s;
  s.arch = "MistralForCausalLM";
  s.model_type = "mistral";
  s.layers = 3;
  s.window = {5, 5, 5};
  const auto w = testing::random_weights(s, 2);
  testing::TempDir dir;
  Json config = testing::tiny_config(s);
  config["sliding_window"] = 5;
  testing::write_checkpoint(dir.path(), config, w);
  check_against_reference(dir.path(), s, w);

  // The window matters here: without it the reference differs.
  TinySpec full = s;
  full.window.clear();
  EXPECT_GT(max_abs_diff(testing::reference_logits(full, w, kIds), testing::reference_logits(s, w, kIds)),
            1e-3);

  // Decoding through the cache applies the same window.
  const Model m = Model::load(dir.path(), {at::kDouble, at::kCPU});
  c10::InferenceMode guard;
  KVCache cache = m.new_cache(1, 16);
  ForwardOptions o;
  o.cache = &cache;
  std::vector<at::Tensor> parts{m.forward(row(kIds).narrow(1, 0, 3), o)};
  for (size_t t = 3; t < kIds.size(); ++t) parts.push_back(m.forward(row({kIds[t]}), o));
  EXPECT_LE(max_abs_diff(at::cat(parts, 1)[0], testing::reference_logits(s, w, kIds)), 1e-10);
}

TEST(ReferenceTest, Qwen2SlidingWindowOnUpperLayers) {
  TinySpec s;
  s.arch = "Qwen2ForCausalLM";
  s.model_type = "qwen2";
  s.qkv_bias = true;
  s.layers = 3;
  s.window = {0, 4, 4};
  const auto w = testing::random_weights(s, 3);
  testing::TempDir dir;
  Json config = testing::tiny_config(s);
  config["use_sliding_window"] = true;
  config["sliding_window"] = 4;
  config["max_window_layers"] = 1;
  testing::write_checkpoint(dir.path(), config, w);
  check_against_reference(dir.path(), s, w);
}

TEST(ReferenceTest, LlamaWithAttentionAndMlpBias) {
  TinySpec s;
  s.qkv_bias = s.o_bias = s.mlp_bias = true;
  s.heads = s.kv_heads = 3;
  s.head_dim = 10;  // head_dim override: 3 * 10 != hidden 24
  const auto w = testing::random_weights(s, 4);
  testing::TempDir dir;
  testing::write_checkpoint(dir.path(), testing::tiny_config(s), w);
  check_against_reference(dir.path(), s, w);
}

TEST(ReferenceTest, LeftPaddedBatchMatchesEachSequence) {
  TinySpec s;
  s.arch = "MistralForCausalLM";
  s.model_type = "mistral";
  s.window = {6, 6};
  const auto w = testing::random_weights(s, 5);
  testing::TempDir dir;
  Json config = testing::tiny_config(s);
  config["sliding_window"] = 6;
  testing::write_checkpoint(dir.path(), config, w);
  const Model m = Model::load(dir.path(), {at::kDouble, at::kCPU});

  const std::vector<std::vector<int64_t>> seqs = {kIds, {4, 8, 15}, {16, 23, 42 % 37, 1, 7, 9, 10}};
  const int64_t L = static_cast<int64_t>(kIds.size());
  at::Tensor ids = at::zeros({3, L}, at::kLong), mask = at::zeros({3, L}, at::kLong);
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = static_cast<int64_t>(seqs[b].size());
    ids[b].narrow(0, L - n, n).copy_(at::tensor(seqs[b], at::kLong));
    mask[b].narrow(0, L - n, n).fill_(1);
  }
  c10::InferenceMode guard;
  ForwardOptions o;
  o.attention_mask = mask;
  const at::Tensor logits = m.forward(ids, o);
  EXPECT_FALSE(logits.isnan().any().item<bool>());
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = static_cast<int64_t>(seqs[b].size());
    EXPECT_LE(max_abs_diff(logits[b].narrow(0, L - n, n), testing::reference_logits(s, w, seqs[b])), 1e-10)
        << b;
  }
}

TEST(ReferenceTest, Bf16StorageConvertsToTheComputeDtype) {
  TinySpec s;
  auto w = testing::random_weights(s, 6);
  for (auto& [n, t] : w) t = t.to(at::kBFloat16).to(at::kFloat);  // what bf16 storage keeps
  testing::TempDir dir;
  testing::write_checkpoint(dir.path(), testing::tiny_config(s), w, at::kBFloat16);
  check_against_reference(dir.path(), s, w);
  testing::TempDir f16;
  for (auto& [n, t] : w) t = t.to(at::kHalf).to(at::kFloat);
  testing::write_checkpoint(f16.path(), testing::tiny_config(s), w, at::kHalf);
  check_against_reference(f16.path(), s, w);
}

}  // namespace
}  // namespace lowrank::nn
