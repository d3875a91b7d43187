// Decoding a hybrid LowrankMixerForCausalLM (nn/token_mixer.h: attention layers through the KV
// cache, the test-only test_mean layer through its decode state, tests/nn/test_mixers.h):
// - greedy nn::generate of a batch of prompts of different lengths (left padding) equals, row by
//   row, the argmax of a full forward() over the prompt and the tokens so far, with no cache (the
//   independent computation), in both layer orders;
// - the cached path's logits (prefill, then one token a step) equal the full forward's to 1e-10;
// - the state-keeping layer's memory is the same after 1 and after 20 steps, and it has no
//   key/value storage;
// - the errors: a causal mixer without a decode state (generate), a bidirectional mixer in a
//   causal LM (random and load), a cache made without the mixer states, clear() on a hybrid cache.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/nn/generate.h"
#include "lowrank/nn/model.h"
#include "tests/nn/test_mixers.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

Json hybrid_config(const Json& layer_mixers) {
  Json c = testing_mixers::mixer_config(testing_mixers::tiny_spec(), layer_mixers);
  c["mixer_config"] = {{"test_mean", {{"offset_init", 0.25}}}};
  // Larger than the default 0.02, so that the logits of a random model are far apart and a wrong
  // state changes the argmax.
  c["initializer_range"] = 0.4;
  return c;
}

Model hybrid(const Json& layer_mixers, uint64_t seed) {
  testing_mixers::register_test_mixers();
  return Model::random(ModelConfig::from_json(hybrid_config(layer_mixers), "hybrid"), seed,
                       {at::kDouble, at::kCPU});
}

const std::vector<std::vector<int64_t>> kPrompts = {{3, 17, 9, 22, 4}, {11, 6}, {7, 1, 20}};

// The independent computation: each prompt alone, a full forward (no cache, no padding) over the
// prompt and the tokens chosen so far, the argmax of the last position.
std::vector<int64_t> greedy_by_full_forward(const Model& model, std::vector<int64_t> tokens, int64_t n) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor ids = at::tensor(tokens, at::kLong).view({1, -1});
    const int64_t next = model.forward(ids)[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    tokens.push_back(next);
  }
  return out;
}

TEST(MixerDecodeTest, BatchedGreedyGenerateEqualsArgmaxOfFullForwardInBothLayerOrders) {
  for (const Json& layers :
       {Json::array({"attention", "test_mean"}), Json::array({"test_mean", "attention"})}) {
    const Model model = hybrid(layers, 5);
    GenerateOptions options;
    options.max_new_tokens = 6;
    options.pad_token_id = 13;  // a real token's id: the padding must be masked, not harmless
    const std::vector<Generation> batch = generate(model, kPrompts, options);
    std::set<int64_t> distinct;
    for (size_t b = 0; b < kPrompts.size(); ++b) {
      const std::vector<int64_t> want = greedy_by_full_forward(model, kPrompts[b], 6);
      EXPECT_EQ(batch[b].tokens, want) << layers.dump() << ", prompt " << b;
      distinct.insert(want.begin(), want.end());
    }
    EXPECT_GE(distinct.size(), 4u) << "the oracle's tokens are nearly constant: too weak a check";
  }
}

TEST(MixerDecodeTest, CachedLogitsEqualFullForwardLogitsUnderLeftPadding) {
  const Model model = hybrid(Json::array({"attention", "test_mean"}), 6);
  const int64_t B = static_cast<int64_t>(kPrompts.size()), L = 5, steps = 4;
  at::Tensor ids = at::full({B, L}, 0, at::kLong);
  at::Tensor mask = at::zeros({B, L}, at::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const auto n = static_cast<int64_t>(kPrompts[b].size());
    ids[b].narrow(0, L - n, n).copy_(at::tensor(kPrompts[b], at::kLong));
    mask[b].narrow(0, L - n, n).fill_(1);
  }
  KVCache cache = model.new_cache(B, 2);  // small: the attention layer's storage grows
  ForwardOptions o;
  o.cache = &cache;
  o.attention_mask = mask;
  const at::Tensor prefill = model.forward(ids, o);
  o.attention_mask = at::Tensor();
  const at::Tensor appended =
      at::tensor({8, 2, 19, 5, 22, 0, 14, 3, 21, 10, 6, 17}, at::kLong).view({B, steps});
  std::vector<at::Tensor> stepped;
  for (int64_t t = 0; t < steps; ++t) stepped.push_back(model.forward(appended.narrow(1, t, 1), o));
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> tokens = kPrompts[b];
    const auto n = static_cast<int64_t>(tokens.size());
    for (int64_t t = 0; t < steps; ++t) tokens.push_back(appended[b][t].item<int64_t>());
    const at::Tensor full = model.forward(at::tensor(tokens, at::kLong).view({1, -1}))[0];
    EXPECT_LE(testing::max_abs_diff(prefill[b].narrow(0, L - n, n), full.narrow(0, 0, n)), 1e-10) << b;
    for (int64_t t = 0; t < steps; ++t)
      EXPECT_LE(testing::max_abs_diff(stepped[t][b][0], full[n + t]), 1e-10) << "row " << b << ", step " << t;
  }
}

int64_t state_bytes(KVCache& cache, int64_t layer) {
  auto* state = dynamic_cast<testing_mixers::MeanOfPastMixer::State*>(cache.mixer_state(layer));
  EXPECT_NE(state, nullptr);
  if (state == nullptr) return -1;
  return static_cast<int64_t>(state->sum.nbytes() + state->count.nbytes());
}

TEST(MixerDecodeTest, TheStateKeepingLayersMemoryIsConstantInSteps) {
  const Model model = hybrid(Json::array({"attention", "test_mean"}), 7);
  KVCache cache = model.new_cache(2, 4);
  EXPECT_EQ(cache.mixer_state(0), nullptr);
  EXPECT_TRUE(cache.keys(0).defined());
  EXPECT_FALSE(cache.keys(1).defined()) << "layer 1 keeps its mixer state, not keys and values";
  EXPECT_FALSE(cache.values(1).defined());
  ForwardOptions o;
  o.cache = &cache;
  (void)model.forward(at::tensor({3, 4, 5, 6, 7, 8}, at::kLong).view({2, 3}), o);
  const int64_t after_prefill = state_bytes(cache, 1);
  EXPECT_EQ(after_prefill, 2 * (8 + 1) * 8);  // sum [2, 1, 8] and count [2, 1, 1], float64
  int64_t after_one = 0;
  for (int64_t t = 0; t < 20; ++t) {
    (void)model.forward(at::full({2, 1}, t % 23, at::kLong), o);
    if (t == 0) after_one = state_bytes(cache, 1);
  }
  EXPECT_EQ(after_one, after_prefill);
  EXPECT_EQ(state_bytes(cache, 1), after_prefill);
  EXPECT_GE(cache.capacity(), 23) << "the attention layer's keys grow with the steps";
  EXPECT_FALSE(cache.keys(1).defined());
  EXPECT_THROW(cache.clear(), Unsupported);
}

TEST(MixerDecodeTest, GenerateRefusesACausalMixerWithoutADecodeStateNamingIt) {
  const Model model = hybrid(Json::array({"attention", "test_stateless"}), 8);
  bool called = false;
  GenerateOptions options;
  options.max_new_tokens = 3;
  options.on_token = [&](size_t, int64_t) { return called = true; };
  EXPECT_THROW((void)generate(model, kPrompts, options), Unsupported);
  const std::string message = testing::error_of([&] { (void)generate(model, kPrompts, options); });
  EXPECT_NE(message.find("layer 1's mixer \"test_stateless\" keeps neither a KV store nor a decode state"),
            std::string::npos)
      << message;
  EXPECT_FALSE(called);
  // Its forward still scores whole sequences.
  EXPECT_TRUE(model.forward(at::tensor({1, 2, 3}, at::kLong).view({1, 3})).isfinite().all().item<bool>());
}

TEST(MixerDecodeTest, ABidirectionalMixerInACausalLmIsRefusedAtLoadNamingIt) {
  const std::string message = "test_bidirectional is bidirectional; use it in a classification model";
  const std::string at_random = testing::error_of([] {
    (void)hybrid(Json::array({"attention", "test_bidirectional"}), 9);
  });
  EXPECT_NE(at_random.find(message), std::string::npos) << at_random;
  // A checkpoint whose tensors fit (same names and shapes as test_mean's), refused by Model::load.
  testing::TempDir tmp;
  hybrid(Json::array({"attention", "test_mean"}), 9).save(tmp.path());
  Json config = read_json_file(tmp / "config.json");
  config["layer_mixers"] = Json::array({"attention", "test_bidirectional"});
  write_json_file(tmp / "config.json", config);
  const std::string at_load = testing::error_of([&] {
    (void)Model::load(tmp.path(), {at::kDouble, at::kCPU});
  });
  EXPECT_NE(at_load.find(message), std::string::npos) << at_load;
}

}  // namespace
}  // namespace lowrank::nn
